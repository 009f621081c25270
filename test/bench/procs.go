package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// CPU accounting per component, from /proc: which process used the 2 cores in a phase.

type procStat struct {
	comm        string
	ppid, pgrp  int
	utime, stim float64
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[j+2:])
	if len(f) < 13 {
		return procStat{}, false
	}
	var st procStat
	st.comm = s[i+1 : j]
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgrp, _ = strconv.Atoi(f[2])
	st.utime, _ = strconv.ParseFloat(f[11], 64)
	st.stim, _ = strconv.ParseFloat(f[12], 64)
	return st, true
}

// CPUSnap is CPU seconds per component at a moment.
type CPUSnap struct {
	At  time.Time
	Sec map[string]float64
}

// cpuSnapshot attributes every process on the machine to keycloak (Keycloak's process
// group), kube-apiserver, etcd, operator, harness (this process) or other.
func (e *Env) cpuSnapshot(op *Operator) CPUSnap {
	s := CPUSnap{At: time.Now(), Sec: map[string]float64{}}
	kcGroup := 0
	if e.KC != nil {
		kcGroup = e.KC.ProcessGroup()
	}
	opPid := 0
	if op != nil {
		opPid = op.Pid()
	}
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		cpu := (st.utime + st.stim) / 100
		var name string
		switch {
		case kcGroup != 0 && st.pgrp == kcGroup:
			name = "keycloak"
		case pid == opPid:
			name = "operator"
		case pid == self:
			name = "harness"
		case st.comm == "kube-apiserver" && st.ppid == self:
			name = "kube-apiserver"
		case st.comm == "etcd" && st.ppid == self:
			name = "etcd"
		default:
			continue
		}
		s.Sec[name] += cpu
	}
	return s
}

// Cores is the CPU each component used between two snapshots, in cores.
type Cores map[string]float64

func (s CPUSnap) CoresSince(b CPUSnap) Cores {
	d := s.At.Sub(b.At).Seconds()
	out := Cores{}
	if d <= 0 {
		return out
	}
	for k, v := range s.Sec {
		out[k] = (v - b.Sec[k]) / d
	}
	return out
}

var componentOrder = []string{"keycloak", "kube-apiserver", "etcd", "operator", "harness"}

func (c Cores) String() string {
	var parts []string
	keys := append([]string(nil), componentOrder...)
	for k := range c {
		found := false
		for _, o := range componentOrder {
			found = found || o == k
		}
		if !found {
			keys = append(keys, k)
		}
	}
	sort.SliceStable(keys[len(componentOrder):], func(i, j int) bool { return keys[len(componentOrder)+i] < keys[len(componentOrder)+j] })
	total := 0.0
	for _, k := range keys {
		if v, ok := c[k]; ok {
			parts = append(parts, k+" "+strconv.FormatFloat(v, 'f', 2, 64))
			total += v
		}
	}
	return strings.Join(parts, ", ") + " (sum " + strconv.FormatFloat(total, 'f', 2, 64) + ")"
}

// machineBusy is the whole machine's CPU use (all processes) between two /proc/stat reads.
type machineSnap struct {
	at         time.Time
	busy, idle float64
}

func readMachine() machineSnap {
	b, _ := os.ReadFile("/proc/stat")
	line := strings.SplitN(string(b), "\n", 2)[0]
	f := strings.Fields(line)
	var busy, idle float64
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		if i == 3 || i == 4 { // idle, iowait
			idle += x
		} else if i < 8 {
			busy += x
		}
	}
	return machineSnap{at: time.Now(), busy: busy / 100, idle: idle / 100}
}

func (m machineSnap) coresSince(b machineSnap) float64 {
	d := m.at.Sub(b.at).Seconds()
	if d <= 0 {
		return 0
	}
	return (m.busy - b.busy) / d
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return fmt.Sprintf("%.0f GiB", kb/(1<<20))
		}
	}
	return "?"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "?"
}
