package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerLoad loads the three tarballs with `docker load` into a throwaway Docker engine with
// the classic image store, the one that reads only the tarball's docker manifest.json (as every
// Docker before 25 does, and Docker 25-28 by default; Docker with the containerd image store reads
// the OCI layout, as `ctr images import` does in TestContainerdImport), and runs them.
//
// The engine is Debian's docker.io package (Docker 20.10), unpacked, not installed, into
// bin/images-cache/docker; it runs with its own data root, exec root and socket under a
// temporary directory, no bridge and no iptables rules, and is stopped and removed at the end.
func TestDockerLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the docker load test needs root (it runs a Docker engine): run `make test` as root")
	}
	for _, bin := range []string{"containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing: apt-get install containerd runc", bin)
		}
	}
	v := version(t)
	refs := map[string]string{
		"operator.tar":     operatorRepo + ":v" + v,
		"pause.tar":        "localhost/mlflow-token-operator/pause:v" + v,
		"training-job.tar": "localhost/mlflow-token-operator/training-job:v" + v,
	}
	dir := buildImages(t, "", "operator", "pause", "training-job") // cached in bin/images
	d := startDockerd(t, unpackDockerIO(t))

	for file, ref := range refs {
		out, err := d.docker("load", "-i", filepath.Join(dir, file))
		if err != nil || !strings.Contains(out, "Loaded image: "+ref) {
			t.Errorf("docker load -i %s: %v\n%s", file, err, out)
		}
	}
	for file, want := range map[string]string{
		"operator.tar":     "65532:65532 [/manager]",
		"pause.tar":        "65535:65535 [/pause]",
		"training-job.tar": "65532:65532 [/opt/venv/bin/python /app/training_job.py]",
	} {
		out, err := d.docker("image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", refs[file])
		if err != nil || strings.TrimSpace(out) != want {
			t.Errorf("docker image inspect %s: %v: %q, want %q", refs[file], err, strings.TrimSpace(out), want)
		}
	}

	out, err := d.docker("run", "--rm", "--network", "none", refs["operator.tar"], "--help")
	if err != nil || !strings.Contains(out, "-leader-elect") {
		t.Errorf("docker run operator --help: %v\n%s", err, out)
	}
	// The training image's entrypoint, as its non-root user: the script is readable and runs.
	out, err = d.docker("run", "--rm", "--network", "none", refs["training-job.tar"], "--help")
	if err != nil || !strings.Contains(out, "usage: training_job.py") {
		t.Errorf("docker run training-job --help: %v\n%s", err, out)
	}
	out, err = d.docker("run", "--rm", "--network", "none", "--entrypoint", "python", refs["training-job.tar"],
		"-c", "import os, mlflow, mlflow_token_file_auth; print(os.getuid(), mlflow.__version__)")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "65532 3.") {
		t.Errorf("python in the training image: %v\n%s", err, out)
	}
	if out, err := d.docker("run", "-d", "--name", "pause", "--network", "none", refs["pause.tar"]); err != nil {
		t.Fatalf("docker run -d pause: %v\n%s", err, out)
	}
	if out, err := d.docker("stop", "-t", "10", "pause"); err != nil {
		t.Errorf("docker stop pause: %v\n%s", err, out)
	}
	out, err = d.docker("inspect", "--format", "{{.State.ExitCode}}", "pause")
	if err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("pause after docker stop (SIGTERM): exit %q (%v), want 0", strings.TrimSpace(out), err)
	}
	_, _ = d.docker("rm", "-f", "pause")
}

// unpackDebs returns a directory holding the files of Debian packages pkgs, fetching and
// unpacking them on first use into bin/images-cache/<name> (apt-get download and dpkg-deb -x: no
// install, no maintainer scripts, no service started).
func unpackDebs(t testing.TB, name, check string, pkgs ...string) string {
	t.Helper()
	cache := filepath.Join(repoRoot(t), "bin", "images-cache", name)
	root := filepath.Join(cache, "root")
	if _, err := os.Stat(filepath.Join(root, check)); err == nil {
		return root
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	download := func() ([]byte, error) {
		cmd := exec.Command("apt-get", append([]string{"download"}, pkgs...)...)
		cmd.Dir = cache
		return cmd.CombinedOutput()
	}
	if out, err := download(); err != nil {
		t.Logf("apt-get download %s: %v\n%s\nupdating the package lists ...", strings.Join(pkgs, " "), err, out)
		if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			t.Fatalf("apt-get update: %v\n%s", err, out)
		}
		if out, err := download(); err != nil {
			t.Fatalf("apt-get download %s: %v\n%s", strings.Join(pkgs, " "), err, out)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "*.deb"))
	tmp := root + ".tmp"
	_ = os.RemoveAll(tmp)
	for _, deb := range debs {
		if out, err := exec.Command("dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
		}
		_ = os.Remove(deb)
	}
	if _, err := os.Stat(filepath.Join(tmp, check)); err != nil {
		t.Fatalf("no %s in %s: %v", check, strings.Join(pkgs, " "), err)
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	return root
}

func unpackDockerIO(t testing.TB) string {
	return unpackDebs(t, "docker", "usr/sbin/dockerd", "docker.io")
}

type dockerd struct {
	client, host string
	env          []string
}

func (d *dockerd) docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.client, args...)
	cmd.Env = append(d.env, "DOCKER_HOST="+d.host)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func startDockerd(t *testing.T, root string) *dockerd {
	dir, err := os.MkdirTemp("", "dkr-")
	if err != nil {
		t.Fatal(err)
	}
	// Docker 20.10 writes its trust key to /etc/docker unless told otherwise (only in its config
	// file), and makes /run/docker/plugins whatever its flags say: keep the first in dir, remove
	// the second afterwards when this test made it.
	config := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(config, []byte(`{"deprecated-key-path": "`+filepath.Join(dir, "key.json")+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var made []string
	for _, p := range []string{"/run/docker", "/run/docker/plugins"} {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			made = append([]string{p}, made...)
		}
	}
	env := append(os.Environ(), "PATH="+filepath.Join(root, "usr", "sbin")+":"+filepath.Join(root, "usr", "bin")+":"+os.Getenv("PATH"))
	// The engine's own containerd comes from Debian's containerd package (it starts one under
	// its exec root). vfs: no overlay mounts of its own; no bridge, no iptables, no proxy.
	cmd := exec.Command(filepath.Join(root, "usr", "sbin", "dockerd"), "--config-file", config,
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "-H", "unix://"+filepath.Join(dir, "docker.sock"),
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
		"--userland-proxy=false", "--storage-driver=vfs")
	cmd.Env = env
	startDaemon(t, cmd, dir, "dockerd", 20*time.Second, func() {
		for _, p := range made {
			_ = os.Remove(p) // only if empty
		}
	})
	d := &dockerd{client: filepath.Join(root, "usr", "bin", "docker"), host: "unix://" + filepath.Join(dir, "docker.sock"), env: env}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := d.docker("version", "--format", "{{.Server.Version}}")
		if err == nil {
			t.Logf("Docker engine %s (Debian docker.io), classic image store", strings.TrimSpace(out))
			return d
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
			t.Fatalf("dockerd did not answer within 60 s: %v\n%s", err, tail(string(log), 40))
		}
		time.Sleep(300 * time.Millisecond)
	}
}
