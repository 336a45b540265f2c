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
	"strconv"
	"strings"
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

// File is a disk as the FUSE layer serves it: a tracked disk, or any other
// writable image of fixed size (a recovered machine's overlay on a replica
// view). Every method is safe for concurrent use.
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt answers ErrOutside for a write past the end.
	WriteAt(p []byte, off int64) (int, error)
	// Zero makes [off, off+n) read as zeros (a discard).
	Zero(off, n int64) error
	// Sync makes every write so far durable.
	Sync() error
	Size() int64
}

// Serve serves t as the file at path until Close. path must not exist, or
// be a link left by an earlier Serve of the same path (its stale mount is
// detached first).
func Serve(path string, t *Tracked) (*Mount, error) {
	return ServeFile(path, t.path, t)
}

// ServeFile serves f as the file at path, the way Serve serves a tracked
// disk; name says what is served, in the mount table and in errors.
func ServeFile(path, name string, f File) (*Mount, error) {
	m, err := serve(path, name, f)
	if err != nil {
		return nil, fmt.Errorf("capture: serve %s at %s: %w", name, path, err)
	}
	return m, nil
}

func serve(path, what string, f File) (*Mount, error) {
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
	node := &diskNode{f: f, uid: uint32(os.Getuid()), gid: uint32(os.Getgid()), born: time.Now()}
	if st, ok := f.(interface {
		Stat() (syscall.Stat_t, error)
	}); ok {
		node.stat = st.Stat
	}
	sec := time.Second
	opts := &fs.Options{
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			FsName:     "standby:" + filepath.Base(what),
			Name:       "standby",
			MaxWrite:   MaxFUSEWrite,
			AllowOther: os.Geteuid() == 0,
			// Root mounts with mount(2) itself; others go through fusermount.
			DirectMount:       os.Geteuid() == 0,
			DirectMountStrict: os.Geteuid() == 0,
			Logger:            fuseLogger(),
			Debug:             os.Getenv("STANDBY_FUSE_DEBUG") != "",
			// A panic is a bug: the writer gets EIO, and the stack goes
			// to standard error, not to the discarded log.
			PanicHandler: func(v any) fuse.Status {
				fmt.Fprintf(os.Stderr, "standby: panic serving %s: %v\n%s", what, v, debug.Stack())
				return fuse.EIO
			},
		},
		OnAdd: func(ctx context.Context) {
			ch := root.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
			root.AddChild(name, ch, false)
		},
	}
	server, err := mountNoInherit(dir, root, opts)
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

// CanServe says whether this process can serve disks through FUSE: the
// kernel's /dev/fuse opens, and a process that is not root has fusermount
// to mount with.
func CanServe() error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrPermission):
		return errors.New("FUSE is not available to this user: it cannot open /dev/fuse (fuse3 installs it with mode 0666)")
	case err != nil:
		return fmt.Errorf("FUSE is not available: %w (install fuse3, load the fuse module)", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err := exec.LookPath("fusermount"); err != nil {
				return errors.New("FUSE is not available to this user: fusermount3 is not installed (install fuse3)")
			}
		}
	}
	return nil
}

// fuseLogger discards go-fuse's log unless STANDBY_FUSE_DEBUG is set, when
// every request and reply goes to standard error.
func fuseLogger() *log.Logger {
	if os.Getenv("STANDBY_FUSE_DEBUG") != "" {
		return log.New(os.Stderr, "fuse: ", log.Lmicroseconds)
	}
	return log.New(io.Discard, "", 0)
}

// mountNoInherit mounts like fs.Mount, but the process's /dev/fuse
// descriptor is not inherited by the processes it starts later (a machine's
// boot command): mounting directly, go-fuse opens it without close-on-exec,
// and a machine holding it would keep a dead server's mount hanging instead
// of failing. Starting processes waits meanwhile (the fork lock), which is
// why a direct mount must not fall back to running fusermount.
func mountNoInherit(dir string, root fs.InodeEmbedder, opts *fs.Options) (*fuse.Server, error) {
	if !opts.DirectMountStrict {
		// fusermount hands over a descriptor go-fuse marks close-on-exec.
		return fs.Mount(dir, root, opts)
	}
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	server, err := fs.Mount(dir, root, opts)
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, e := range fds {
		if t, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && t == "/dev/fuse" {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				syscall.CloseOnExec(fd)
			}
		}
	}
	return server, err
}

// detachStale lazily unmounts a FUSE mount left at dir by a process that
// died. It never stats dir: a mount whose server is gone while some process
// still holds its device would not answer.
//
// Its connection is aborted first: a process that died holding a file of
// its own mount (its exit waits on a flush only it could answer) is freed,
// and requests still waiting on the dead server fail at once.
func detachStale(dir string) {
	dev, ok := mounted(dir)
	if !ok {
		return
	}
	if _, minor, ok := strings.Cut(dev, ":"); ok {
		_ = os.WriteFile(filepath.Join("/sys/fs/fuse/connections", minor, "abort"), []byte("1"), 0)
	}
	_ = lazyUnmount(dir)
}

// mounted says whether dir is a mount point, and its device
// ("major:minor"), from the mount table alone.
func mounted(dir string) (string, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == dir {
			return f[2], true
		}
	}
	return "", false
}

// unescapeMount undoes the octal escapes (\040 for a space) of a path in
// the mount table.
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out = append(out, byte(v))
				i += 3
				continue
			}
		}
		out = append(out, s[i])
	}
	return string(out)
}

// fusermount is the helper that mounts and unmounts FUSE for a user.
func fusermount() string {
	if p, err := exec.LookPath("fusermount3"); err == nil {
		return p
	}
	return "fusermount"
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

// Detach stops serving without waiting for the file's users: the link is
// removed and the mount detached lazily; a process that still holds the
// file open sees it fail once this process exits. For a daemon going down
// while machines run from its disks; Serve at the same path later serves
// the disk again to those who open it anew.
func (m *Mount) Detach() error {
	if err := os.Remove(m.link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("capture: stop serving %s: %w", m.link, err)
	}
	if err := m.server.Unmount(); err != nil {
		if err := lazyUnmount(m.dir); err != nil {
			return fmt.Errorf("capture: stop serving %s: %w", m.link, err)
		}
	}
	_ = os.Remove(m.dir)
	return nil
}

func (m *Mount) unmount() error {
	if err := m.server.Unmount(); err != nil {
		// Busy: detach now, serve until the users close it.
		if derr := lazyUnmount(m.dir); derr != nil {
			return fmt.Errorf("unmount %s: %v; %w", m.dir, err, derr)
		}
		m.server.Wait()
	}
	_ = os.Remove(m.dir)
	return nil
}

// lazyUnmount detaches the mount at dir now; it goes once its last user
// lets go. A user that is not root goes through fusermount.
func lazyUnmount(dir string) error {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	if err == nil {
		return nil
	}
	if ferr := exec.Command(fusermount(), "-u", "-z", dir).Run(); ferr != nil {
		return fmt.Errorf("detach %s: %v", dir, err)
	}
	return nil
}

// diskNode is the disk's file in the FUSE mount.
type diskNode struct {
	fs.Inode
	f File
	// stat, when the file has one, gives owner and times; otherwise the
	// serving process owns the file and it was born when served.
	stat     func() (syscall.Stat_t, error)
	uid, gid uint32
	born     time.Time
}

var (
	_ fs.NodeGetattrer = (*diskNode)(nil)
	_ fs.NodeSetattrer = (*diskNode)(nil)
	_ fs.NodeOpener    = (*diskNode)(nil)
)

func (n *diskNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	size := n.f.Size()
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(size)
	out.Blocks = uint64(size / 512)
	out.Blksize = 4096
	out.Nlink = 1
	if n.stat == nil {
		out.Uid, out.Gid = n.uid, n.gid
		t := uint64(n.born.Unix())
		out.Mtime, out.Ctime, out.Atime = t, t, t
		return 0
	}
	st, err := n.stat()
	if err != nil {
		return fs.ToErrno(err)
	}
	out.Uid, out.Gid = st.Uid, st.Gid
	out.Mtime, out.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	out.Ctime, out.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	out.Atime, out.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	return 0
}

// Setattr refuses to change the size: a disk does not shrink or grow
// under its VM. Other attributes are accepted and ignored.
func (n *diskNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.f.Size() {
		return syscall.EPERM
	}
	return n.Getattr(ctx, f, out)
}

func (n *diskNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EPERM
	}
	h := &diskHandle{f: n.f, sync: flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// diskHandle is one open of the disk's file.
type diskHandle struct {
	f    File
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
	n, err := h.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *diskHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.f.WriteAt(data, off)
	if errors.Is(err, ErrOutside) {
		return uint32(n), syscall.ENOSPC
	}
	if err != nil {
		return uint32(n), syscall.EIO
	}
	if h.sync {
		if err := h.f.Sync(); err != nil {
			return 0, syscall.EIO
		}
	}
	return uint32(n), 0
}

// Fsync makes the disk durable: the backing file is synced.
func (h *diskHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if err := h.f.Sync(); err != nil {
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
	case end > h.f.Size():
		return syscall.ENOSPC
	case mode&(punchHole|zeroRange) != 0:
		if err := h.f.Zero(int64(off), int64(size)); err != nil {
			return syscall.EIO
		}
		return 0
	case mode&^keepSize == 0:
		return 0
	}
	return syscall.EOPNOTSUPP
}
