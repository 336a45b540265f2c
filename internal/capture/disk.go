package capture

import (
	"fmt"
	"io"
	"os"
)

// DiskSize returns the size in bytes of a source disk: a regular file or a
// block device.
func DiskSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("capture: size of %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("capture: size of %s: %w", path, err)
	}
	switch {
	case fi.Mode().IsRegular():
		return fi.Size(), nil
	case fi.Mode()&os.ModeDevice != 0:
		n, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, fmt.Errorf("capture: size of block device %s: %w", path, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("capture: %s is neither a regular file nor a block device", path)
}

// IsBlockDevice reports whether path is a block device (whose state needs
// an explicit state directory).
func IsBlockDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}
