package main

import (
	"io"
	"net"
	"sync"
)

// forwarder relays TCP connections from one local address to another. The node mode starts
// Keycloak on 127.0.0.1 while the node starts (Keycloak takes longest), and pods reach it through
// a forwarder on the node's host address, which exists only once the node runs. Bytes pass
// untouched, so Keycloak sees the Host header the pods used and issues tokens for that URL.
type forwarder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func forward(listen, target string) (*forwarder, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			out, err := net.Dial("tcp", f.target)
			if err != nil {
				in.Close()
				return
			}
			if !f.track(in, out) {
				return
			}
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
			go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
			<-done // one side ended: end both
			in.Close()
			out.Close()
			<-done
			f.untrack(in, out)
		}()
	}
}

// track registers the connections; false (and both closed) when the forwarder is closing.
func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *forwarder) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.conns, c)
	}
}

// Close stops listening, ends every relayed connection and waits for them.
func (f *forwarder) Close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
}
