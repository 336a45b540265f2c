//go:build !linux

package replica

import "os"

func openDirect(path string) *os.File { return nil }

func fdatasync(f *os.File) error { return f.Sync() }

func startWriteback(f *os.File, off, n int64) {}

func punchHole(f *os.File, off, n int64) error { return writeZeros(f, off, n) }

func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}
