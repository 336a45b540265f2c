package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/replica"
)

// A recovered machine's disk is a writable overlay on a view of its point,
// served to the machine as a plain file through the same FUSE layer as a
// tracked disk: a failover waits for no copy, replication of other
// machines goes on underneath, and the overlay records every grain the
// machine writes from its first write on. The point stays pinned while the
// overlay lives (key "disks:" + the directory of its files).
//
// The overlays outlive the process: the Protector records them beside the
// replicas and serves them again when it opens the VM (Add). A machine that
// held one open through a process that died must open it anew
// (TakeReserved lists them for the caller to restart those machines).

// OverlayRecord is a served overlay as the VM's state keeps it.
type OverlayRecord struct {
	Disk string `json:"disk"`
	// Seq is the VM point; DiskSeq the disk's own point within it.
	Seq     uint64 `json:"seq"`
	DiskSeq uint64 `json:"diskSeq"`
	// Dir is the directory Disks was given (the machine's, for a job).
	Dir string `json:"dir"`
}

// servedDisk is an overlay this process serves.
type servedDisk struct {
	ov *replica.Overlay
	m  *capture.Mount
}

// ReservedDisk is a disk served again when its VM was opened (an overlay,
// or a tracked source disk): a machine that used it before must be
// restarted to reach it.
type ReservedDisk struct {
	VM   string `json:"vm"`
	Path string `json:"path"`
	Dir  string `json:"dir"`
}

// DiskMode says how Disks gives a machine its disks at a point.
type DiskMode string

// Disk modes.
const (
	// DisksServed: writable overlays on views, served through FUSE.
	DisksServed DiskMode = "served"
	// DisksExported: full copies of the point, written before the machine
	// boots (where FUSE is not available).
	DisksExported DiskMode = "exported"
)

// SetDiskMode chooses how Disks works; DisksServed is the default.
func (p *Protector) SetDiskMode(m DiskMode) { p.mode = m }

// DiskMode is how Disks gives machines their disks.
func (p *Protector) DiskMode() DiskMode {
	if p.mode == "" {
		return DisksServed
	}
	return p.mode
}

func overlayDir(path string) string { return strings.TrimSuffix(path, ".img") + ".overlay" }

func disksPin(dir string) string { return "disks:" + filepath.Clean(dir) }

// Disks gives the VM's disks at point seq as files under dir, by name, for
// a machine to boot from. Served (the default), each is an overlay on a view
// of the point: ready at once, written apart from the replica, the point
// pinned while it lives. Exported, each is a sparse copy with every block's
// hash checked. Called again with the same dir it returns the same files.
func (p *Protector) Disks(ctx context.Context, vm string, seq uint64, dir string) (map[string]string, error) {
	pv, err := p.get(vm)
	if err != nil {
		return nil, err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	pt, ok := pv.point(seq)
	if !ok {
		return nil, fmt.Errorf("replication: disks of %s at point %d: no such point", vm, seq)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if p.DiskMode() == DisksExported {
		return p.exportLocked(ctx, pv, pt, dir)
	}
	if err := p.pinLocked(pv, seq, disksPin(dir)); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range pv.m.Disks {
		path := filepath.Join(dir, d.Name+".img")
		rec := OverlayRecord{Disk: d.Name, Seq: seq, DiskSeq: pt.Disks[d.Name], Dir: filepath.Clean(dir)}
		if old, ok := pv.st.Overlays[path]; ok && old != rec {
			return nil, fmt.Errorf("replication: disks of %s at point %d: %s serves point %d already", vm, seq, path, old.Seq)
		}
		if pv.served[path] == nil {
			if err := p.serveLocked(pv, path, rec); err != nil {
				if !pv.servesDir(rec.Dir) {
					_ = p.unpinLocked(pv, disksPin(dir)) // nothing under dir holds the point
				}
				return nil, fmt.Errorf("replication: disks of %s at point %d: %w", vm, seq, err)
			}
		}
		if pv.st.Overlays == nil {
			pv.st.Overlays = map[string]OverlayRecord{}
		}
		pv.st.Overlays[path] = rec
		out[d.Name] = path
	}
	if err := p.save(pv); err != nil {
		return nil, err
	}
	return out, nil
}

// servesDir says whether an overlay of the VM lives under dir.
func (pv *protected) servesDir(dir string) bool {
	for _, r := range pv.st.Overlays {
		if r.Dir == dir {
			return true
		}
	}
	return false
}

func (p *Protector) serveLocked(pv *protected, path string, rec OverlayRecord) error {
	r := pv.replicas[rec.Disk]
	if r == nil {
		return fmt.Errorf("no disk %s", rec.Disk)
	}
	v, err := r.View(rec.DiskSeq)
	if err != nil {
		return err
	}
	ov, err := v.Overlay(overlayDir(path))
	if err != nil {
		return err
	}
	m, err := capture.ServeFile(path, fmt.Sprintf("%s/%s@%d", pv.m.Name, rec.Disk, rec.Seq), ov)
	if err != nil {
		_ = ov.Close()
		return err
	}
	if pv.served == nil {
		pv.served = map[string]*servedDisk{}
	}
	pv.served[path] = &servedDisk{ov: ov, m: m}
	return nil
}

// exportLocked writes the point's disks as sparse files under dir.
func (p *Protector) exportLocked(ctx context.Context, pv *protected, pt VMPoint, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, d := range pv.m.Disks {
		path := filepath.Join(dir, d.Name+".img")
		if _, err := os.Stat(path); err != nil {
			tmp := path + ".part"
			if _, err := pv.replicas[d.Name].Export(ctx, pt.Disks[d.Name], tmp); err != nil {
				return nil, fmt.Errorf("replication: disks of %s at point %d: %w", pv.m.Name, pt.Seq, err)
			}
			if err := os.Rename(tmp, path); err != nil {
				return nil, err
			}
		}
		out[d.Name] = path
	}
	return out, nil
}

// reserveLocked serves again the overlays the VM's state records, when the
// VM is opened by a new process.
func (p *Protector) reserveLocked(pv *protected) error {
	paths := make([]string, 0, len(pv.st.Overlays))
	for path := range pv.st.Overlays {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	var errs []error
	for _, path := range paths {
		rec := pv.st.Overlays[path]
		if err := p.serveLocked(pv, path, rec); err != nil {
			errs = append(errs, fmt.Errorf("serve %s again: %w", path, err))
			continue
		}
		p.reserved = append(p.reserved, ReservedDisk{VM: pv.m.Name, Path: path, Dir: rec.Dir})
	}
	return errors.Join(errs...)
}

// TakeReserved lists the disks served again when their VMs were opened
// since the last call, and forgets them: their machines are restarted once.
func (p *Protector) TakeReserved() []ReservedDisk {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.reserved
	p.reserved = nil
	return out
}

// Release stops serving the overlays under dir, of every VM, discards them
// and releases their points. Their machines must be stopped.
func (p *Protector) Release(ctx context.Context, dir string) error {
	p.mu.Lock()
	pvs := make([]*protected, 0, len(p.vms))
	for _, pv := range p.vms {
		pvs = append(pvs, pv)
	}
	p.mu.Unlock()
	dir = filepath.Clean(dir)
	var errs []error
	for _, pv := range pvs {
		pv.mu.Lock()
		errs = append(errs, p.releaseLocked(pv, func(rec OverlayRecord) bool {
			return rec.Dir == dir || strings.HasPrefix(rec.Dir, dir+string(filepath.Separator))
		}))
		pv.mu.Unlock()
	}
	return errors.Join(errs...)
}

// releaseLocked discards the VM's overlays that match.
func (p *Protector) releaseLocked(pv *protected, match func(OverlayRecord) bool) error {
	var errs []error
	dirs := map[string]bool{}
	for path, rec := range pv.st.Overlays {
		if !match(rec) {
			continue
		}
		if s := pv.served[path]; s != nil {
			if err := s.m.Detach(); err != nil {
				errs = append(errs, err)
				continue
			}
			_ = s.ov.Close()
			delete(pv.served, path)
		}
		_ = os.Remove(path)
		if err := os.RemoveAll(overlayDir(path)); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(pv.st.Overlays, path)
		for name, r := range pv.st.Recovered {
			if r == path {
				delete(pv.st.Recovered, name)
			}
		}
		dirs[rec.Dir] = true
	}
	for dir := range dirs {
		if err := p.unpinLocked(pv, disksPin(dir)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.save(pv); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("replication: release the disks of %s: %w", pv.m.Name, err)
	}
	return nil
}

// closeServed stops serving the VM's overlays without discarding them:
// the process is going away, and the next one serves them again.
func (pv *protected) closeServed() {
	for path, s := range pv.served {
		_ = s.m.Detach()
		_ = s.ov.Close()
		delete(pv.served, path)
	}
}

// recoveredReader opens what Reverse reads a recovered disk from: the
// served overlay itself when there is one, else the file.
func (pv *protected) recoveredReader(path string) (io.ReaderAt, int64, func(), error) {
	if s := pv.served[path]; s != nil {
		return s.ov, s.ov.Size(), func() {}, nil
	}
	return openReader(path)
}

// DiskReader reads the disk at path without going through this process's
// own FUSE mounts: a served overlay or tracked disk is read in process, any
// other path is opened. A process must never hold a file of its own mounts
// open: killed then, its exit would wait forever on itself.
func (p *Protector) DiskReader(path string) (io.ReaderAt, int64, func(), error) {
	p.mu.Lock()
	pvs := make([]*protected, 0, len(p.vms))
	for _, pv := range p.vms {
		pvs = append(pvs, pv)
	}
	p.mu.Unlock()
	for _, pv := range pvs {
		pv.mu.Lock()
		if s := pv.served[path]; s != nil {
			pv.mu.Unlock()
			return s.ov, s.ov.Size(), func() {}, nil
		}
		if pv.tr != nil {
			for i, d := range pv.m.Disks {
				if d.Served == path {
					t := pv.tr.disks[i]
					pv.mu.Unlock()
					return t, t.Size(), func() {}, nil
				}
			}
		}
		pv.mu.Unlock()
	}
	return openReader(path)
}

func openReader(path string) (io.ReaderAt, int64, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	return f, fi.Size(), func() { f.Close() }, nil
}
