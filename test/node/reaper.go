package node

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The reaper is a copy of the current program (the test binary, or the local demo), started by
// Start in a session of its own. It waits on a pipe from its parent. When the parent ends without
// saying that it stopped the node (a panic, `go test -timeout`, SIGKILL, a crash), the pipe closes
// and the reaper removes the node; it also holds the slot's lock until then, so that the next
// Start of that slot waits for the cleanup instead of racing it.
const reaperEnv = "MLFLOW_TOKEN_OPERATOR_NODE_REAPER"

// stoppedWord tells the reaper that the parent stopped the node itself.
const stoppedWord = "stopped"

func init() {
	// Runs before anything else of the program (tests, flags): this process is only the reaper.
	if v := os.Getenv(reaperEnv); v != "" {
		os.Exit(reaperMain(v))
	}
}

func reaperMain(v string) int {
	slot, err := strconv.Atoi(v)
	if err != nil || slot < 0 || slot >= maxSlots {
		fmt.Fprintf(os.Stderr, "reaper: bad slot %q\n", v)
		return 2
	}
	l := newLayout(slot)
	// Ignore the signals a terminal or a test runner sends to the group: the cleanup must finish.
	for _, s := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE} {
		signal.Ignore(s)
	}
	data, _ := io.ReadAll(os.Stdin) // returns when the parent closes the pipe or dies
	if strings.TrimSpace(string(data)) == stoppedWord {
		return 0
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[node %s reaper] %s\n", l.name, fmt.Sprintf(format, args...))
	}
	logf("The process that started the node is gone without stopping it: removing the node")
	if err := cleanSlot(l, logf); err != nil {
		logf("%v", err)
		return 1
	}
	logf("Removed; nothing left behind")
	return 0
}

func (n *Node) startReaper() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	lockFile, err := n.lock.File() // a duplicate: the reaper keeps the slot locked
	if err != nil {
		return err
	}
	defer lockFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if n.o.LogDir != "" {
		if err := os.MkdirAll(n.o.LogDir, 0o755); err == nil {
			out, err = os.OpenFile(filepath.Join(n.o.LogDir, "reaper.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
		}
	}
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(exe)
	// Not the slot's marker: the cleanup would kill the reaper.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", reaperEnv + "=" + strconv.Itoa(n.l.slot)}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, out, out
	cmd.ExtraFiles = []*os.File{lockFile}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting the node's reaper: %w", err)
	}
	n.reaper, n.reaperIn = cmd, w
	return nil
}

// releaseSlot ends the reaper (telling it that the node is gone when stopped is true) and
// releases the slot's lock.
func (n *Node) releaseSlot(stopped bool) {
	if n.reaperIn != nil {
		if stopped {
			_, _ = io.WriteString(n.reaperIn, stoppedWord)
		}
		n.reaperIn.Close()
		_ = n.reaper.Wait() // when not stopped, the reaper runs the cleanup once more first
	}
	if n.lock != nil {
		n.lock.Close()
	}
}
