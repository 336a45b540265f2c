package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MaxFUSEWrite is the largest write the kernel hands the agent in one
// request: an application write up to this size reaches the disk whole, on
// one side of a cut.
const MaxFUSEWrite = 1 << 20

// Mount is a tracked disk served as a plain file through FUSE.
//
// The kernel's FUSE root is a directory, so the disk is the only file of a
// FUSE mount on a hidden directory beside PATH, and PATH is a symbolic link
// to it: the VM's process opens, writes, fsyncs, loop-mounts PATH like any
// image file. Files are opened in direct I/O mode and without a write-back
// cache, so every write reaches WriteAt before the writer is answered.
type Mount struct {
	server *fuse.Server
	dir    string // the FUSE mount point
	link   string // PATH
}

// MountDir is the hidden directory beside path where the FUSE file system
// serving path is mounted.
func MountDir(path string) string {
	return filepath.Join(filepath.Dir(path), ".standby-mnt-"+filepath.Base(path))
}

// Serve serves t as the file at path until Close. path must not exist, or
// be a link left by an earlier Serve of the same path (its stale mount is
// detached first).
func Serve(path string, t *Tracked) (*Mount, error) {
	m, err := serve(path, t)
	if err != nil {
		return nil, fmt.Errorf("capture: serve %s at %s: %w", t.path, path, err)
	}
	return m, nil
}

func serve(path string, t *Tracked) (*Mount, error) {
	path = filepath.Clean(path)
	dir := MountDir(path)
	name := filepath.Base(path)
	target := filepath.Join(filepath.Base(dir), name)
	if fi, err := os.Lstat(path); err == nil {
		old, lerr := os.Readlink(path)
		if fi.Mode()&os.ModeSymlink == 0 || lerr != nil || old != target {
			return nil, fmt.Errorf("%s exists and is not a tracked disk served earlier: choose a path that does not exist", path)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	detachStale(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	root := &fs.Inode{}
	node := &diskNode{t: t}
	sec := time.Second
	opts := &fs.Options{
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			FsName:     "standby:" + filepath.Base(t.path),
			Name:       "standby",
			MaxWrite:   MaxFUSEWrite,
			AllowOther: os.Geteuid() == 0,
			// Root mounts with mount(2) itself; others go through fusermount.
			DirectMount: os.Geteuid() == 0,
			Logger:      fuseLogger(),
			Debug:       os.Getenv("STANDBY_FUSE_DEBUG") != "",
			// A panic is a bug: the writer gets EIO, and the stack goes
			// to standard error, not to the discarded log.
			PanicHandler: func(v any) fuse.Status {
				fmt.Fprintf(os.Stderr, "standby: panic serving %s: %v\n%s", t.path, v, debug.Stack())
				return fuse.EIO
			},
		},
		OnAdd: func(ctx context.Context) {
			ch := root.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
			root.AddChild(name, ch, false)
		},
	}
	server, err := fs.Mount(dir, root, opts)
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("mount FUSE on %s (is /dev/fuse there, and fusermount for a non-root user?): %w", dir, err)
	}
	m := &Mount{server: server, dir: dir, link: path}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.Symlink(target, path); err != nil {
			_ = m.unmount()
			return nil, err
		}
	}
	return m, nil
}

// fuseLogger discards go-fuse's log unless STANDBY_FUSE_DEBUG is set, when
// every request and reply goes to standard error.
func fuseLogger() *log.Logger {
	if os.Getenv("STANDBY_FUSE_DEBUG") != "" {
		return log.New(os.Stderr, "fuse: ", log.Lmicroseconds)
	}
	return log.New(io.Discard, "", 0)
}

// detachStale lazily unmounts a FUSE mount left by a process that died: its
// directory answers ENOTCONN.
func detachStale(dir string) {
	_, err := os.Stat(dir)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		if err == nil && isMountPoint(dir) {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		return
	}
	if syscall.Unmount(dir, syscall.MNT_DETACH) != nil {
		_ = exec.Command("fusermount", "-u", "-z", dir).Run()
	}
}

func isMountPoint(dir string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// Path is the file the disk is served at.
func (m *Mount) Path() string { return m.link }

// Close stops serving: the link is removed and the FUSE file system
// unmounted. While the file is still open (a loop device, a process), the
// mount is detached lazily and Close waits until the last user lets go, so
// no write is lost.
func (m *Mount) Close() error {
	if err := os.Remove(m.link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("capture: stop serving %s: %w", m.link, err)
	}
	if err := m.unmount(); err != nil {
		return fmt.Errorf("capture: stop serving %s: %w", m.link, err)
	}
	return nil
}

func (m *Mount) unmount() error {
	if err := m.server.Unmount(); err != nil {
		// Busy: detach now, serve until the users close it.
		if derr := syscall.Unmount(m.dir, syscall.MNT_DETACH); derr != nil {
			if ferr := exec.Command("fusermount", "-u", "-z", m.dir).Run(); ferr != nil {
				return fmt.Errorf("unmount %s: %v; detach: %v", m.dir, err, derr)
			}
		}
		m.server.Wait()
	}
	_ = os.Remove(m.dir)
	return nil
}

// diskNode is the disk's file in the FUSE mount.
type diskNode struct {
	fs.Inode
	t *Tracked
}

var (
	_ fs.NodeGetattrer = (*diskNode)(nil)
	_ fs.NodeSetattrer = (*diskNode)(nil)
	_ fs.NodeOpener    = (*diskNode)(nil)
)

func (n *diskNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(n.t.f.Fd()), &st); err != nil {
		return fs.ToErrno(err)
	}
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(n.t.size)
	out.Blocks = uint64(n.t.size / 512)
	out.Blksize = 4096
	out.Nlink = 1
	out.Uid, out.Gid = st.Uid, st.Gid
	out.Mtime, out.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	out.Ctime, out.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	out.Atime, out.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	return 0
}

// Setattr refuses to change the size: a disk does not shrink or grow
// under its VM. Other attributes are accepted and ignored.
func (n *diskNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.t.size {
		return syscall.EPERM
	}
	return n.Getattr(ctx, f, out)
}

func (n *diskNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EPERM
	}
	h := &diskHandle{t: n.t, sync: flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// diskHandle is one open of the disk's file.
type diskHandle struct {
	t    *Tracked
	sync bool // O_SYNC or O_DSYNC: every write is synced before it is answered
}

var (
	_ fs.FileReader    = (*diskHandle)(nil)
	_ fs.FileWriter    = (*diskHandle)(nil)
	_ fs.FileFsyncer   = (*diskHandle)(nil)
	_ fs.FileFlusher   = (*diskHandle)(nil)
	_ fs.FileAllocater = (*diskHandle)(nil)
)

func (h *diskHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.t.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *diskHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.t.WriteAt(data, off)
	if errors.Is(err, ErrOutside) {
		return uint32(n), syscall.ENOSPC
	}
	if err != nil {
		return uint32(n), syscall.EIO
	}
	if h.sync {
		if err := h.t.Sync(); err != nil {
			return 0, syscall.EIO
		}
	}
	return uint32(n), 0
}

// Fsync makes the disk durable: the backing file is synced.
func (h *diskHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if err := h.t.Sync(); err != nil {
		return syscall.EIO
	}
	return 0
}

// Flush (on every close) has nothing to do: writes are already in the
// backing file, and durability is fsync's.
func (h *diskHandle) Flush(ctx context.Context) syscall.Errno { return 0 }

// Allocate supports discards (punch hole, zero range) as tracked writes of
// zeros; plain allocation inside the disk changes nothing.
func (h *diskHandle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	const keepSize, punchHole, zeroRange = 0x01, 0x02, 0x10
	end := int64(off + size)
	switch {
	case end > h.t.size:
		return syscall.ENOSPC
	case mode&(punchHole|zeroRange) != 0:
		if err := h.t.Zero(int64(off), int64(size)); err != nil {
			return syscall.EIO
		}
		return 0
	case mode&^keepSize == 0:
		return 0
	}
	return syscall.EOPNOTSUPP
}
