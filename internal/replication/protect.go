package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/spec"
)

// ErrFenced is returned when a fenced VM is asked for a new point: after a
// failover the old source must not replicate again by itself.
var ErrFenced = errors.New("replication of this machine is fenced (it was failed over); reprotect to replicate again")

// SourceDisk is one protected disk: its name and source file.
type SourceDisk struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	// Served, with tracked capture, is where the Protector serves the
	// disk to its machine (a FUSE file over Source).
	Served string `json:"served,omitempty"`
}

// Machine is what the Protector protects of one VM.
type Machine struct {
	Name      string
	Disks     []SourceDisk
	Threads   int
	BlockSize int64
	Retention replica.Retention
	// Capture is spec.CaptureTracked (the disks are served at their Served
	// paths and every write tracked) or spec.CaptureScan (the default
	// here: each point reads and hashes the whole disk).
	Capture string
	// Policy and Quiesce drive a tracked machine's points: its streams,
	// retention, RPO threshold and the commands around app-consistent cuts.
	Policy  spec.Policy
	Quiesce *spec.Quiesce
}

// VMPoint is a recovery point of a whole VM: one point of each of its
// disks, cut together.
type VMPoint struct {
	Seq   uint64            `json:"seq"`
	Time  time.Time         `json:"time"`
	Kind  string            `json:"kind"`
	Disks map[string]uint64 `json:"disks"`
}

// vmState is what the Protector keeps on disk per VM, beside the replicas,
// so that a new process can take over from the directory alone.
type vmState struct {
	Points []VMPoint          `json:"points"`
	Pins   map[string]uint64  `json:"pins"` // job -> VM point
	Fenced bool               `json:"fenced"`
	Disks  []SourceDisk       `json:"disks"`
	Stats  map[string]float64 `json:"stats,omitempty"`
	// Recovered are the disk files the VM runs from after a failover, by
	// disk name: what reprotect copies back to the source disks.
	Recovered map[string]string `json:"recovered,omitempty"`
	// Final is the point a planned failover cut with the VM stopped.
	Final uint64 `json:"final,omitempty"`
	// Overlays are the disks served to recovered machines, by path.
	Overlays map[string]OverlayRecord `json:"overlays,omitempty"`
	// Served says a process has served the VM's tracked disks.
	Served bool `json:"served,omitempty"`
}

// Protector keeps the replicas of a set of VMs under one directory and
// cuts whole-VM points: with tracked capture all the VM's disks at one
// instant (protect_tracked.go), with scan capture each disk synced in turn;
// then the VM point is recorded. It gives recovered machines their disks
// (overlays.go) and satisfies what recovery asks of protection (through an
// adapter in the wiring layer).
type Protector struct {
	root  string
	clock clock.Clock
	mode  DiskMode

	mu       sync.Mutex
	vms      map[string]*protected
	reserved []ReservedDisk
}

type protected struct {
	mu       sync.Mutex // one cut at a time
	m        Machine
	replicas map[string]*replica.Replica
	served   map[string]*servedDisk // by path
	tr       *trackedRun            // with tracked capture
	st       vmState
}

// NewProtector keeps replicas under root/<vm>/<disk>.
func NewProtector(root string, c clock.Clock) *Protector {
	if c == nil {
		c = clock.Real{}
	}
	return &Protector{root: root, clock: c, vms: map[string]*protected{}}
}

func (p *Protector) vmDir(vm string) string { return filepath.Join(p.root, vm) }

// Add starts protecting m: it opens (or creates, sized from the source) the
// replica of each disk and loads the VM's points.
func (p *Protector) Add(m Machine) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.vms[m.Name]; ok {
		return nil
	}
	pv := &protected{m: m, replicas: map[string]*replica.Replica{}, st: vmState{Pins: map[string]uint64{}}}
	if err := os.MkdirAll(p.vmDir(m.Name), 0o755); err != nil {
		return fmt.Errorf("replication: protect %s: %w", m.Name, err)
	}
	if b, err := os.ReadFile(filepath.Join(p.vmDir(m.Name), "vm.json")); err == nil {
		if err := json.Unmarshal(b, &pv.st); err != nil {
			return fmt.Errorf("replication: protect %s: vm.json is damaged: %w", m.Name, err)
		}
		if pv.st.Pins == nil {
			pv.st.Pins = map[string]uint64{}
		}
	}
	pv.st.Disks = m.Disks
	for _, d := range m.Disks {
		dir := filepath.Join(p.vmDir(m.Name), d.Name)
		if err := os.MkdirAll(dir+".source", 0o755); err != nil {
			pv.close()
			return fmt.Errorf("replication: protect %s disk %s: %w", m.Name, d.Name, err)
		}
		opts := replica.Options{BlockSize: m.BlockSize, Clock: p.clock}
		r, err := replica.Open(dir, opts)
		if err != nil {
			fi, serr := os.Stat(d.Source)
			if serr != nil {
				return fmt.Errorf("replication: protect %s disk %s: %w", m.Name, d.Name, serr)
			}
			r, err = replica.Create(dir, fi.Size(), opts)
		}
		if err != nil {
			pv.close()
			return fmt.Errorf("replication: protect %s disk %s: %w", m.Name, d.Name, err)
		}
		pv.replicas[d.Name] = r
	}
	if err := p.reserveLocked(pv); err != nil {
		pv.close()
		return fmt.Errorf("replication: protect %s: %w", m.Name, err)
	}
	if m.Capture == spec.CaptureTracked {
		if err := p.serveTracked(context.Background(), pv); err != nil {
			pv.close()
			return fmt.Errorf("replication: protect %s: serve its disks: %w", m.Name, err)
		}
		if err := p.save(pv); err != nil {
			pv.close()
			return fmt.Errorf("replication: protect %s: %w", m.Name, err)
		}
	}
	p.vms[m.Name] = pv
	return nil
}

func (pv *protected) close() {
	pv.closeTracked()
	pv.closeServed()
	for _, r := range pv.replicas {
		_ = r.Close()
	}
}

// Close closes every replica.
func (p *Protector) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pv := range p.vms {
		pv.close()
	}
	p.vms = map[string]*protected{}
	return nil
}

func (p *Protector) get(vm string) (*protected, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pv := p.vms[vm]
	if pv == nil {
		return nil, fmt.Errorf("replication: %s is not protected", vm)
	}
	return pv, nil
}

func (p *Protector) save(pv *protected) error {
	b, err := json.MarshalIndent(pv.st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(p.vmDir(pv.m.Name), "vm.json"), b)
}

// writeFileAtomic writes data to path through a synced temporary file and
// a rename, then syncs the directory.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CutResult is what one VM point cost.
type CutResult struct {
	Point VMPoint `json:"point"`
	// SyncedAt is when the replicas last equalled the disks: the point's
	// time, or later when a tracked cut found nothing written since.
	SyncedAt     time.Time `json:"syncedAt"`
	BytesRead    int64     `json:"bytesRead"`
	BytesShipped int64     `json:"bytesShipped"`
	Seconds      float64   `json:"seconds"`
}

// Cut syncs every disk of vm and records the VM point. progress, when
// set, hears the bytes done over all disks.
func (p *Protector) Cut(ctx context.Context, vm, kind string, progress func(done, total int64)) (CutResult, error) {
	pv, err := p.get(vm)
	if err != nil {
		return CutResult{}, err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	if pv.st.Fenced {
		return CutResult{}, fmt.Errorf("replication: cut %s: %w", vm, ErrFenced)
	}
	return p.cutLocked(ctx, pv, kind, progress)
}

func (p *Protector) cutLocked(ctx context.Context, pv *protected, kind string, progress func(done, total int64)) (CutResult, error) {
	if pv.tr != nil {
		return p.cutTracked(ctx, pv, kind)
	}
	start := p.clock.Now()
	var total int64
	for _, r := range pv.replicas {
		total += r.Size()
	}
	var res CutResult
	pt := VMPoint{Time: start, Kind: kind, Disks: map[string]uint64{}}
	if pt.Kind == "" {
		pt.Kind = replica.KindCrash
	}
	var base int64
	for _, d := range pv.m.Disks {
		r := pv.replicas[d.Name]
		opts := Options{Threads: pv.m.Threads, Kind: pt.Kind, StateDir: filepath.Join(p.vmDir(pv.m.Name), d.Name+".source"), Clock: p.clock}
		if progress != nil {
			b := base
			opts.Progress = func(done, _ int64) { progress(b+done, total) }
		}
		out, err := Sync(ctx, d.Source, Local(r), opts)
		if err != nil {
			return res, fmt.Errorf("replication: cut %s: %w", pv.m.Name, err)
		}
		base += r.Size()
		pt.Disks[d.Name] = out.Point.Seq
		res.BytesRead += out.BytesRead
		res.BytesShipped += out.BytesShipped
	}
	if err := p.recordLocked(pv, &pt); err != nil {
		return res, err
	}
	res.Point, res.SyncedAt = pt, pt.Time
	res.Seconds = p.clock.Since(start).Seconds()
	p.pruneLocked(ctx, pv)
	return res, nil
}

// recordLocked numbers pt as the VM's next point and records it.
func (p *Protector) recordLocked(pv *protected, pt *VMPoint) error {
	pt.Seq = 1
	if n := len(pv.st.Points); n > 0 {
		pt.Seq = pv.st.Points[n-1].Seq + 1
	}
	pv.st.Points = append(pv.st.Points, *pt)
	if err := p.save(pv); err != nil {
		pv.st.Points = pv.st.Points[:len(pv.st.Points)-1]
		return fmt.Errorf("replication: cut %s: record point: %w", pv.m.Name, err)
	}
	return nil
}

// pruneLocked applies the VM's retention to every disk and forgets VM
// points whose disk points are gone. Pinned points stay.
func (p *Protector) pruneLocked(ctx context.Context, pv *protected) {
	if pv.m.Retention == (replica.Retention{}) {
		return
	}
	for _, r := range pv.replicas {
		_, _ = r.Prune(ctx, pv.m.Retention)
	}
	p.forgetPrunedLocked(pv)
}

// forgetPrunedLocked forgets the VM points whose disk points retention
// removed.
func (p *Protector) forgetPrunedLocked(pv *protected) {
	n := len(pv.st.Points)
	kept := pv.st.Points[:0]
	for _, pt := range pv.st.Points {
		ok := true
		for name, seq := range pt.Disks {
			if !hasPoint(pv.replicas[name], seq) {
				ok = false
			}
		}
		if ok {
			kept = append(kept, pt)
		}
	}
	pv.st.Points = kept
	if len(kept) != n {
		_ = p.save(pv)
	}
}

func hasPoint(r *replica.Replica, seq uint64) bool {
	for _, p := range r.Points() {
		if p.Seq == seq {
			return true
		}
	}
	return false
}

// Points returns the VM's points, oldest first.
func (p *Protector) Points(ctx context.Context, vm string) ([]VMPoint, error) {
	pv, err := p.get(vm)
	if err != nil {
		return nil, err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return slices.Clone(pv.st.Points), nil
}

func (pv *protected) point(seq uint64) (VMPoint, bool) {
	for _, pt := range pv.st.Points {
		if pt.Seq == seq {
			return pt, true
		}
	}
	return VMPoint{}, false
}

// Pin keeps a VM point (each of its disk points) from retention for a job.
func (p *Protector) Pin(ctx context.Context, vm string, seq uint64, job string) error {
	pv, err := p.get(vm)
	if err != nil {
		return err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return p.pinLocked(pv, seq, job)
}

func (p *Protector) pinLocked(pv *protected, seq uint64, key string) error {
	pt, ok := pv.point(seq)
	if !ok {
		return fmt.Errorf("replication: pin %s point %d: no such point", pv.m.Name, seq)
	}
	if old, ok := pv.st.Pins[key]; ok && old == seq {
		return nil
	}
	for name, ds := range pt.Disks {
		if err := pv.replicas[name].Pin(ds, true); err != nil {
			return fmt.Errorf("replication: pin %s point %d: %w", pv.m.Name, seq, err)
		}
	}
	pv.st.Pins[key] = seq
	return p.save(pv)
}

// Unpin releases what job pinned of vm; a point another job pins stays.
func (p *Protector) Unpin(ctx context.Context, vm, job string) error {
	pv, err := p.get(vm)
	if err != nil {
		return err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return p.unpinLocked(pv, job)
}

func (p *Protector) unpinLocked(pv *protected, key string) error {
	seq, ok := pv.st.Pins[key]
	if !ok {
		return nil
	}
	delete(pv.st.Pins, key)
	still := false
	for _, s := range pv.st.Pins {
		still = still || s == seq
	}
	if pt, ok := pv.point(seq); ok && !still {
		for name, ds := range pt.Disks {
			if err := pv.replicas[name].Pin(ds, false); err != nil && !errors.Is(err, replica.ErrNoPoint) {
				return fmt.Errorf("replication: unpin %s point %d: %w", pv.m.Name, seq, err)
			}
		}
	}
	return p.save(pv)
}

// Fence stops new points of vm until Unfence.
func (p *Protector) Fence(ctx context.Context, vm string) error {
	pv, err := p.get(vm)
	if err != nil {
		return err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	pv.st.Fenced = true
	return p.save(pv)
}

// Unfence lets vm replicate again from its source (the end of a failback):
// the disks its recovered machine ran from are released.
func (p *Protector) Unfence(ctx context.Context, vm string) error {
	pv, err := p.get(vm)
	if err != nil {
		return err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	rec := map[string]bool{}
	for _, path := range pv.st.Recovered {
		rec[path] = true
	}
	if err := p.releaseLocked(pv, func(r OverlayRecord) bool {
		return rec[filepath.Join(r.Dir, r.Disk+".img")]
	}); err != nil {
		return err
	}
	pv.st.Fenced, pv.st.Final, pv.st.Recovered = false, 0, nil
	return p.save(pv)
}

// Fenced reports whether vm is fenced.
func (p *Protector) Fenced(vm string) bool {
	pv, err := p.get(vm)
	if err != nil {
		return false
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return pv.st.Fenced
}

// Final cuts a last point of a stopped VM and fences it: a planned
// failover loses nothing. Called again after it fenced, it returns the
// point it cut.
func (p *Protector) Final(ctx context.Context, vm string) (VMPoint, error) {
	pv, err := p.get(vm)
	if err != nil {
		return VMPoint{}, err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	if pv.st.Fenced {
		if pt, ok := pv.point(pv.st.Final); ok && pv.st.Final > 0 {
			return pt, nil
		}
		return VMPoint{}, fmt.Errorf("replication: final point of %s: %w", vm, ErrFenced)
	}
	// The machine is stopped: its disks are quiet, so the point is
	// application-consistent.
	res, err := p.cutLocked(ctx, pv, replica.KindApp, nil)
	if err != nil {
		return VMPoint{}, err
	}
	pv.st.Fenced, pv.st.Final = true, res.Point.Seq
	if err := p.save(pv); err != nil {
		return VMPoint{}, err
	}
	return res.Point, nil
}

// Commit releases the job's pins and records the disks the VM runs from
// now: the ones Disks wrote for the job's point.
func (p *Protector) Commit(ctx context.Context, vm, job string) error { return p.Unpin(ctx, vm, job) }

// SetRecovered records the disk files vm runs from after a failover.
func (p *Protector) SetRecovered(vm string, disks map[string]string) error {
	pv, err := p.get(vm)
	if err != nil {
		return err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	pv.st.Recovered = disks
	return p.save(pv)
}

// RecoveredDisks returns the disk files vm runs from after a failover, by
// name (none when it has not failed over).
func (p *Protector) RecoveredDisks(vm string) (map[string]string, error) {
	pv, err := p.get(vm)
	if err != nil {
		return nil, err
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return maps.Clone(pv.st.Recovered), nil
}

// Sources returns the source disk files of vm, by name.
func (p *Protector) Sources(vm string) (map[string]string, error) {
	pv, err := p.get(vm)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range pv.m.Disks {
		out[d.Name] = d.Source
		if d.Served != "" && pv.tr != nil {
			out[d.Name] = d.Served
		}
	}
	return out, nil
}

// DeltaStats is what a reverse copy read and sent.
type DeltaStats struct {
	BytesRead int64   `json:"bytesRead"`   // read from both sides
	BytesSent int64   `json:"bytesSent"`   // blocks that differed, written
	Blocks    int64   `json:"blocks"`      // blocks compared
	InAll     int64   `json:"blocksInAll"` // blocks of the disks
	Differ    int64   `json:"differ"`      // blocks that differed
	Seconds   float64 `json:"seconds"`
}

// Reverse brings each surviving source disk of vm level with the disk the
// VM runs from after failover, sending only the blocks whose hashes differ
// (reprotect), and syncs them. Run again, it sends what changed since.
func (p *Protector) Reverse(ctx context.Context, vm string) (DeltaStats, error) {
	pv, err := p.get(vm)
	if err != nil {
		return DeltaStats{}, err
	}
	// The VM is fenced while it runs at the target: holding its lock for
	// the copy stops nothing but a release of the disks read.
	pv.mu.Lock()
	defer pv.mu.Unlock()
	rec := pv.st.Recovered
	if len(rec) == 0 {
		return DeltaStats{}, fmt.Errorf("replication: reprotect %s: it has not failed over (no recovered disks recorded); fail over and commit first", vm)
	}
	start := p.clock.Now()
	var total DeltaStats
	for i, d := range pv.m.Disks {
		from := rec[d.Name]
		if from == "" {
			return total, fmt.Errorf("replication: reprotect %s: no recovered disk %s", vm, d.Name)
		}
		src, size, done, err := pv.recoveredReader(from)
		if err != nil {
			return total, fmt.Errorf("replication: reprotect %s disk %s: %w", vm, d.Name, err)
		}
		var st DeltaStats
		if pv.tr != nil {
			// Through the tracking, so the next point ships what changed;
			// only where either side may have changed since the point.
			bs := pv.replicas[d.Name].BlockSize()
			var blocks []int64
			if s := pv.served[from]; s != nil {
				blocks, err = changedBlocks(s.ov, pv.tr.disks[i], bs)
				if err != nil {
					blocks = nil // compare every block
				}
			}
			st, err = deltaCopyTo(ctx, src, size, pv.tr.disks[i], bs, blocks)
		} else {
			st, err = deltaCopy(ctx, src, size, d.Source, pv.replicas[d.Name].BlockSize())
		}
		done()
		if err != nil {
			return total, fmt.Errorf("replication: reprotect %s disk %s: %w", vm, d.Name, err)
		}
		total.BytesRead += st.BytesRead
		total.BytesSent += st.BytesSent
		total.Blocks += st.Blocks
		total.InAll += st.InAll
		total.Differ += st.Differ
	}
	total.Seconds = p.clock.Since(start).Seconds()
	return total, nil
}

// DeltaCopy makes `to` equal to `from` block by block, writing only the
// blocks whose BLAKE3 hashes differ, then syncs `to`. A missing `to` is
// created; a `to` of another size is resized.
func DeltaCopy(ctx context.Context, from, to string, blockSize int64) (DeltaStats, error) {
	src, err := os.Open(from)
	if err != nil {
		return DeltaStats{}, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return DeltaStats{}, err
	}
	return deltaCopy(ctx, src, fi.Size(), to, blockSize)
}

func deltaCopy(ctx context.Context, src io.ReaderAt, size int64, to string, blockSize int64) (DeltaStats, error) {
	dst, err := os.OpenFile(to, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return DeltaStats{}, err
	}
	defer dst.Close()
	if di, err := dst.Stat(); err != nil {
		return DeltaStats{}, err
	} else if di.Size() != size {
		if err := dst.Truncate(size); err != nil {
			return DeltaStats{}, err
		}
	}
	return deltaCopyTo(ctx, src, size, dst, blockSize, nil)
}

// changedBlocks lists the blocks where a recovered disk and its tracked
// source may differ: what the recovered machine wrote (its overlay), what
// later points wrote at the source after the overlay's point, and what the
// source wrote that no point holds yet. Everywhere else both equal the
// point.
func changedBlocks(ov *replica.Overlay, src *capture.Tracked, blockSize int64) ([]int64, error) {
	later, err := ov.Changed()
	if err != nil {
		return nil, err
	}
	set := map[int64]bool{}
	for _, list := range [][]int64{later, ov.WrittenBlocks(blockSize), src.Pending(blockSize)} {
		for _, b := range list {
			set[b] = true
		}
	}
	out := slices.Sorted(maps.Keys(set))
	if out == nil {
		out = []int64{} // nothing to compare, not everything
	}
	return out, nil
}

// diskRW is a disk a reverse copy reads and writes: a file, or a tracked
// disk (whose writes are then tracked).
type diskRW interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// deltaCopyTo makes dst equal src, comparing the blocks listed (all when
// blocks is nil) and writing those whose hashes differ.
func deltaCopyTo(ctx context.Context, src io.ReaderAt, size int64, dst diskRW, blockSize int64, blocks []int64) (DeltaStats, error) {
	if blockSize <= 0 {
		blockSize = replica.DefaultBlockSize
	}
	if t, ok := dst.(*capture.Tracked); ok && t.Size() != size {
		return DeltaStats{}, fmt.Errorf("the recovered disk holds %d bytes, the source disk %d: a tracked disk keeps its size", size, t.Size())
	}
	var st DeltaStats
	a := make([]byte, blockSize)
	b := make([]byte, blockSize)
	nblocks := (size + blockSize - 1) / blockSize
	st.InAll = nblocks
	for i := int64(0); ; i++ {
		blk := i
		if blocks != nil {
			if i >= int64(len(blocks)) {
				break
			}
			blk = blocks[i]
		}
		if blk >= nblocks {
			break
		}
		if err := ctx.Err(); err != nil {
			return st, err
		}
		off := blk * blockSize
		n := min(blockSize, size-off)
		if _, err := src.ReadAt(a[:n], off); err != nil {
			return st, err
		}
		if _, err := dst.ReadAt(b[:n], off); err != nil {
			return st, err
		}
		st.BytesRead += 2 * n
		st.Blocks++
		if blake3Sum(a[:n]) != blake3Sum(b[:n]) {
			if _, err := dst.WriteAt(a[:n], off); err != nil {
				return st, err
			}
			st.BytesSent += n
			st.Differ++
		}
	}
	return st, dst.Sync()
}

func blake3Sum(b []byte) [32]byte { return blake3.Sum256(b) }
