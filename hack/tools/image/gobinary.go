package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// goBinarySpec is an image that holds one static Go binary and nothing else: no shell, no
// package manager, no /etc. The operator and the pod sandbox (pause) images are such images.
type goBinarySpec struct {
	Dir       string        // module directory to build in
	Pkg       string        // package to build, relative to Dir (e.g. ./cmd)
	Binary    string        // path of the binary inside the image, without a leading slash
	Args      []string      // default arguments (Cmd)
	User      string        // numeric uid:gid
	Platforms []v1.Platform // one image per platform; more than one makes an index
	Ldflags   string
	Meta      meta
	Ref       name.Tag
	// DockerPlatform is the platform whose image the docker manifest.json lists.
	DockerPlatform v1.Platform
	Out            string
	Log            func(format string, args ...any)
}

// goBuildFlags are the flags of every binary this builder makes, and of the Dockerfile's build
// stage (keep them in step): a static binary (CGO_ENABLED=0), no file system paths
// (-trimpath), no VCS stamp (-buildvcs=false: the image labels carry the revision), and
// stripped (-s -w), and grpc without golang.org/x/net/trace (-tags=grpcnotrace: its
// html/template turns off the linker's dead-code elimination of methods, which made the manager
// 20 MB larger once the CSI node plugin linked grpc). With the same toolchain and sources, the
// binary is the same byte for byte.
func goBuildArgs(ldflags, out, pkg string) []string {
	return []string{"build", "-trimpath", "-buildvcs=false", "-tags=grpcnotrace", "-ldflags=" + ldflags, "-o", out, pkg}
}

// buildGoBinaryImage builds s.Pkg for each platform and writes the image tarball s.Out.
func buildGoBinaryImage(ctx context.Context, s goBinarySpec) error {
	tmp, err := os.MkdirTemp(filepath.Dir(s.Out), ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var imgs []v1.Image
	var docker v1.Image
	for _, p := range s.Platforms {
		bin := filepath.Join(tmp, p.OS+"-"+p.Architecture, filepath.Base(s.Binary))
		start := time.Now()
		s.Log("go build %s for %s ...", s.Pkg, p)
		cmd := exec.CommandContext(ctx, "go", goBuildArgs(s.Ldflags, bin, s.Pkg)...)
		cmd.Dir = s.Dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture,
			"GOWORK=off", "GOFLAGS=-mod=readonly")
		if p.Variant != "" && p.Architecture == "arm" {
			cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
		}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		stop := heartbeat(s.Log, fmt.Sprintf("go build %s for %s", s.Pkg, p))
		err := cmd.Run()
		stop()
		if err != nil {
			return fmt.Errorf("go build %s for %s: %w", s.Pkg, p, err)
		}
		s.Log("built %s for %s in %s", s.Pkg, p, time.Since(start).Round(100*time.Millisecond))

		start = time.Now()
		layer, err := layerFromFiles([]file{{Name: s.Binary, Mode: 0o755, Src: bin}}, s.Meta.Created)
		if err != nil {
			return err
		}
		img, err := newImage(p, s.Meta, v1.Config{
			Entrypoint: []string{"/" + s.Binary},
			Cmd:        s.Args,
			User:       s.User,
			WorkingDir: "/",
		}, []step{{Layer: layer, CreatedBy: "COPY " + s.Binary + " /" + s.Binary + " # go build " + strings.Join(goBuildArgs(s.Ldflags, s.Binary, s.Pkg)[1:], " ")}})
		if err != nil {
			return err
		}
		d, err := img.Digest() // compresses the layer (cached for the write below)
		if err != nil {
			return err
		}
		s.Log("image for %s: %s (layer compressed in %s)", p, d, time.Since(start).Round(100*time.Millisecond))
		imgs = append(imgs, img)
		if p.Equals(s.DockerPlatform) {
			docker = img
		}
	}
	if docker == nil {
		return fmt.Errorf("the docker platform %s is not among the platforms built", s.DockerPlatform)
	}
	a := archive{Ref: s.Ref, Docker: docker, Epoch: s.Meta.Created}
	if len(imgs) == 1 {
		a.Image = imgs[0]
	} else {
		idx, err := newIndex(s.Meta, imgs)
		if err != nil {
			return err
		}
		a.Index = idx
	}
	return writeArchive(s.Out, a)
}

// hostPlatform is the platform of this machine, for single-platform images and for the docker
// manifest.json.
func hostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// heartbeat logs a line every 30 s until stop is called: a cold build takes minutes, and go
// build prints nothing meanwhile.
func heartbeat(log func(string, ...any), what string) (stop func()) {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				log("%s: still running (%s)", what, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}
