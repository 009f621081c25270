package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// LeftoversOf reports what of the slot named name (e.g. mtonode-1) still exists.
func LeftoversOf(name string) error { return leftovers(layoutNamed(name)) }

// WaitSlotFree waits until no process holds the slot named name (its reaper included).
func WaitSlotFree(ctx context.Context, name string) error {
	l := layoutNamed(name)
	for {
		ln, err := l.lock()
		if err == nil {
			ln.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("slot %s still locked: %w", name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func layoutNamed(name string) layout {
	var slot int
	if _, err := fmt.Sscanf(strings.TrimPrefix(name, "mtonode-"), "%d", &slot); err != nil {
		panic("not a slot name: " + name)
	}
	return newLayout(slot)
}

// ReaperOf returns the pid of the reaper of the slot named name, 0 when there is none.
func ReaperOf(name string) int {
	want := []byte(reaperEnv + "=" + strconv.Itoa(layoutNamed(name).slot) + "\x00")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(append(env, 0), want) {
			return pid
		}
	}
	return 0
}

// NodeRoutes lists the IPv4 routes of the node's network namespace.
func NodeRoutes(n *Node) (string, error) {
	return run("nsenter", "-t", strconv.Itoa(n.holder.pid()), "-n", "ip", "-4", "route", "show", "table", "all")
}
