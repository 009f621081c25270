package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cleanSlot removes everything a node of this slot may have created, whether it is running,
// stopped half-way or was killed: it is the whole teardown, and Start runs it first to clear what
// a killed run left. What is "ours" is decided by names only the harness uses:
//   - processes carrying the slot's marker in their environment (every component, and what
//     they start: containerd's shims, the kubelet's helpers), every process in the network
//     namespace of those (hostNetwork pods), and every process in the slot's cgroup (pods);
//   - the host side of the link (named after the slot); the node's network namespace, with the
//     CNI bridge, the pods' veths and every iptables rule of kube-proxy and the CNI plugins, lives
//     only as long as those processes, and so do the mounts of the node's mount namespace
//     (containerd's rootfs and netns mounts, the kubelet's Secret volumes);
//   - the cgroup directories named after the slot, mounts under the scratch directory (there are
//     none unless a component escaped its mount namespace), and the scratch directory.
func cleanSlot(l layout, logf func(string, ...any)) error {
	killed := 0
	for round := 0; ; round++ {
		pids := slotProcesses(l)
		if len(pids) == 0 {
			break
		}
		if round == 50 { // 10 s
			return fmt.Errorf("processes of %s still alive after SIGKILL: %v", l.name, pids)
		}
		for _, pid := range pids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil && round == 0 {
				killed++
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if killed > 0 {
		logf("Killed %d process(es) of %s", killed, l.name)
	}

	// The kernel destroys the node's network namespace (and the veth pair with it) shortly after
	// its last process; deleting the host side ourselves makes that immediate.
	if _, err := net.InterfaceByName(l.name); err == nil {
		if _, err := run("ip", "link", "del", l.name); err != nil {
			if _, still := net.InterfaceByName(l.name); still == nil {
				return err
			}
		}
	}

	for _, dir := range slotCgroups(l) {
		if err := removeCgroupTree(dir); err != nil {
			return err
		}
	}

	mounts := mountsUnder(l.scratch)
	for _, m := range mounts { // deepest first
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("unmounting %s: %w", m, err)
		}
	}
	if len(mounts) > 0 {
		logf("Unmounted %d leftover mount(s) under %s", len(mounts), l.scratch)
	}
	if err := os.RemoveAll(l.scratch); err != nil {
		return err
	}
	return leftovers(l)
}

// leftovers lists what of the slot still exists; nil when nothing does.
func leftovers(l layout) error {
	var left []string
	if pids := slotProcesses(l); len(pids) > 0 {
		left = append(left, fmt.Sprintf("processes %v", pids))
	}
	if _, err := net.InterfaceByName(l.name); err == nil {
		left = append(left, "link "+l.name)
	}
	for _, dir := range slotCgroups(l) {
		left = append(left, "cgroup "+dir)
	}
	if m := mountsUnder(l.scratch); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, " "))
	}
	if _, err := os.Stat(l.scratch); err == nil {
		left = append(left, "directory "+l.scratch)
	}
	if len(left) > 0 {
		return fmt.Errorf("%s left behind: %s", l.name, strings.Join(left, "; "))
	}
	return nil
}

// slotProcesses finds the slot's live processes (see cleanSlot).
func slotProcesses(l layout) []int {
	self := os.Getpid()
	hostNet := nsInode("self", "net")
	want := []byte(marker + "=" + l.name + "\x00")
	entries, _ := os.ReadDir("/proc")
	found := map[int]bool{}
	nodeNets := map[uint64]bool{}
	var all []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		all = append(all, pid)
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		found[pid] = true
		if ino := nsInode(e.Name(), "net"); ino != 0 && ino != hostNet {
			nodeNets[ino] = true
		}
	}
	if len(nodeNets) > 0 {
		for _, pid := range all {
			if nodeNets[nsInode(strconv.Itoa(pid), "net")] {
				found[pid] = true
			}
		}
	}
	for _, dir := range slotCgroups(l) {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != self {
					found[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(found))
	for pid := range found {
		// A zombie (a component of ours not yet waited for) has no namespaces and is harmless.
		if nsInode(strconv.Itoa(pid), "net") != 0 {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func nsInode(pid, kind string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/proc", pid, "ns", kind), &st); err != nil {
		return 0
	}
	return st.Ino
}

// cgroupMounts returns the mount points of the cgroup hierarchies (v1 controllers, named v1
// hierarchies and the v2 unified one).
func cgroupMounts() []string {
	var out []string
	for _, m := range mountInfo() {
		if m.fsType == "cgroup" || m.fsType == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out
}

// slotCgroups returns the slot's existing cgroup directories, one per hierarchy.
func slotCgroups(l layout) []string {
	var out []string
	for _, mnt := range cgroupMounts() {
		dir := filepath.Join(mnt, l.name)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			out = append(out, dir)
		}
	}
	return out
}

// removeCgroupTree removes a cgroup directory and its children, deepest first (a cgroup is
// removed with rmdir once it has no processes; its files go with it).
func removeCgroupTree(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		var err error
		for i := 0; i < 50; i++ { // a killed process leaves its cgroup a moment later
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("removing cgroup %s: %w", d, err)
		}
	}
	return nil
}

type mount struct{ point, fsType string }

// mountInfo parses /proc/self/mountinfo (the mounts this process sees).
func mountInfo() []mount {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mount
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		m := mount{point: unescapeMount(f[4])}
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				m.fsType = f[i+1]
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// mountsUnder returns the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	var out []string
	for _, m := range mountInfo() {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CleanLeftovers removes what killed runs left in every slot not held by a live process (a
// running node, or a reaper still cleaning up, holds its slot and is left alone).
func CleanLeftovers(log io.Writer) error {
	var errs []error
	for s := 0; s < maxSlots; s++ {
		l := newLayout(s)
		ln, err := l.lock()
		if errors.Is(err, errSlotBusy) {
			fmt.Fprintf(log, "%s: in use, left alone\n", l.name)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = cleanSlot(l, func(format string, args ...any) { fmt.Fprintf(log, "%s: %s\n", l.name, fmt.Sprintf(format, args...)) })
		ln.Close()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
