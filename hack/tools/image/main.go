// Command image-build writes the project's container images as OCI image tarballs, without a
// Docker engine or a registry, with go-containerregistry (hack/images.sh runs it):
//
//	image-build go-binary  an image holding one static Go binary (the operator; the pod sandbox)
//	image-build rootfs     an image from prepared layer tarballs plus files (the training job)
//	image-build digest     print the digest of the image (index) in a tarball (make release)
//
// Each tarball is an OCI image layout with a docker manifest.json beside it (see writeArchive),
// so `ctr images import`, `docker load`, `skopeo copy oci-archive:` and crane accept it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: image-build go-binary|rootfs [flags] (-h for the flags) | digest FILE")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "go-binary":
		err = goBinaryCmd(ctx, os.Args[2:])
	case "rootfs":
		err = rootfsCmd(os.Args[2:])
	case "digest":
		err = digestCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want go-binary, rootfs or digest", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "image-build: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[image] "+format+"\n", args...)
}

// common holds the flags every image takes.
type common struct {
	ref, out, version, revision, source, licenses, title, description, user string
	epoch                                                                   int64
}

func (c *common) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.ref, "ref", "", "image reference registry/repository:tag (required)")
	fs.StringVar(&c.out, "out", "", "output tarball (required)")
	fs.StringVar(&c.version, "version", "", "org.opencontainers.image.version (default: the tag)")
	fs.StringVar(&c.revision, "revision", "unknown", "org.opencontainers.image.revision: the git commit")
	fs.Int64Var(&c.epoch, "epoch", 0, "SOURCE_DATE_EPOCH: every time in the image (default: $SOURCE_DATE_EPOCH, else 0)")
	fs.StringVar(&c.source, "source", "https://github.com/mlflow-token-operator/mlflow-token-operator", "org.opencontainers.image.source")
	fs.StringVar(&c.licenses, "licenses", "Apache-2.0", "org.opencontainers.image.licenses (SPDX)")
	fs.StringVar(&c.title, "title", "", "org.opencontainers.image.title")
	fs.StringVar(&c.description, "description", "", "org.opencontainers.image.description")
	fs.StringVar(&c.user, "user", "65532:65532", "numeric uid:gid the image runs as")
}

func (c *common) resolve() (name.Tag, meta, error) {
	if c.ref == "" || c.out == "" {
		return name.Tag{}, meta{}, fmt.Errorf("-ref and -out are required")
	}
	ref, err := name.NewTag(c.ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, meta{}, fmt.Errorf("-ref: %w", err)
	}
	if !numericUser(c.user) {
		// The kubelet refuses a non-numeric USER under runAsNonRoot without runAsUser: it cannot
		// tell whether a user name is root.
		return name.Tag{}, meta{}, fmt.Errorf("-user %q: want numeric uid:gid", c.user)
	}
	if c.epoch == 0 {
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			if c.epoch, err = strconv.ParseInt(s, 10, 64); err != nil {
				return name.Tag{}, meta{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
			}
		}
	}
	if c.version == "" {
		c.version = ref.TagStr()
	}
	if err := os.MkdirAll(filepath.Dir(c.out), 0o755); err != nil {
		return name.Tag{}, meta{}, err
	}
	return ref, meta{
		Title: c.title, Description: c.description, Source: c.source, Version: c.version,
		Revision: c.revision, Licenses: c.licenses, Created: time.Unix(c.epoch, 0).UTC(),
	}, nil
}

func numericUser(u string) bool {
	uid, gid, ok := strings.Cut(u, ":")
	if _, err := strconv.ParseUint(uid, 10, 32); err != nil || !ok {
		return false
	}
	_, err := strconv.ParseUint(gid, 10, 32)
	return err == nil
}

func goBinaryCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("go-binary", flag.ContinueOnError)
	var c common
	c.bind(fs)
	dir := fs.String("dir", ".", "Go module directory to build in")
	pkg := fs.String("pkg", "./cmd", "package to build, relative to -dir")
	binary := fs.String("binary", "manager", "path of the binary in the image (no leading slash)")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch: one image each; several make an index")
	dockerPlatform := fs.String("docker-platform", "", "platform of the image that the docker manifest.json lists (default: this machine's, else the first)")
	ldflags := fs.String("ldflags", "-s -w", "go build -ldflags")
	cmdArgs := fs.String("args", "", "comma-separated default arguments (image Cmd)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ref, m, err := c.resolve()
	if err != nil {
		return err
	}
	s := goBinarySpec{
		Dir: *dir, Pkg: *pkg, Binary: strings.TrimPrefix(*binary, "/"), User: c.user,
		Ldflags: *ldflags, Meta: m, Ref: ref, Out: c.out, Log: logf,
	}
	if *cmdArgs != "" {
		s.Args = strings.Split(*cmdArgs, ",")
	}
	for _, p := range strings.Split(*platforms, ",") {
		pl, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil {
			return fmt.Errorf("-platforms: %w", err)
		}
		s.Platforms = append(s.Platforms, *pl)
	}
	s.DockerPlatform = s.Platforms[0]
	if *dockerPlatform != "" {
		pl, err := v1.ParsePlatform(*dockerPlatform)
		if err != nil {
			return fmt.Errorf("-docker-platform: %w", err)
		}
		s.DockerPlatform = *pl
	} else {
		for _, p := range s.Platforms {
			if p.Equals(hostPlatform()) {
				s.DockerPlatform = p
			}
		}
	}
	start := time.Now()
	if err := buildGoBinaryImage(ctx, s); err != nil {
		return err
	}
	return reportWritten(c.out, start)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func rootfsCmd(args []string) error {
	fs := flag.NewFlagSet("rootfs", flag.ContinueOnError)
	var c common
	c.bind(fs)
	var layers, files, env listFlag
	fs.Var(&layers, "layer", "TARBALL=WHAT: a layer (tar or tar.gz made elsewhere) and what made it (repeatable, in order)")
	fs.Var(&files, "file", "SRC=DEST: a file copied to DEST (absolute) in a last layer, mode 0644 (repeatable)")
	fs.Var(&env, "env", "KEY=VALUE in the image config (repeatable)")
	entrypoint := fs.String("entrypoint", "", "comma-separated entrypoint")
	cmdArgs := fs.String("cmd", "", "comma-separated default arguments (image Cmd)")
	workdir := fs.String("workdir", "/", "working directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ref, m, err := c.resolve()
	if err != nil {
		return err
	}
	start := time.Now()
	var steps []step
	for _, l := range layers {
		p, what, _ := strings.Cut(l, "=")
		logf("layer %s ...", filepath.Base(p))
		layer, err := layerFromTarFile(p)
		if err != nil {
			return fmt.Errorf("-layer %s: %w", p, err)
		}
		steps = append(steps, step{Layer: layer, CreatedBy: what})
	}
	if len(files) > 0 {
		var fl []file
		var dests []string
		for _, f := range files {
			src, dest, ok := strings.Cut(f, "=")
			if !ok || !strings.HasPrefix(dest, "/") {
				return fmt.Errorf("-file %q: want SRC=/DEST", f)
			}
			fl = append(fl, file{Name: strings.TrimPrefix(dest, "/"), Mode: 0o644, Src: src})
			dests = append(dests, dest)
		}
		layer, err := layerFromFiles(fl, m.Created)
		if err != nil {
			return err
		}
		steps = append(steps, step{Layer: layer, CreatedBy: "COPY " + strings.Join(dests, " ")})
	}
	cfg := v1.Config{User: c.user, WorkingDir: *workdir, Env: env}
	if *entrypoint != "" {
		cfg.Entrypoint = strings.Split(*entrypoint, ",")
	}
	if *cmdArgs != "" {
		cfg.Cmd = strings.Split(*cmdArgs, ",")
	}
	img, err := newImage(hostPlatform(), m, cfg, steps)
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	logf("image for %s: %s", hostPlatform(), d)
	if err := writeArchive(c.out, archive{Ref: ref, Image: img, Docker: img, Epoch: m.Created}); err != nil {
		return err
	}
	return reportWritten(c.out, start)
}

func reportWritten(out string, start time.Time) error {
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	logf("wrote %s (%.1f MB) in %s", out, float64(fi.Size())/1e6, time.Since(start).Round(100*time.Millisecond))
	return nil
}
