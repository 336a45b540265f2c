package netlab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/provider"
)

// Prefix is what every namespace of lab is named with: "sb-" and four hex
// digits of a hash of the lab's name. Down removes by it.
func Prefix(lab string) string {
	sum := sha256.Sum256([]byte(lab))
	return "sb-" + hex.EncodeToString(sum[:2]) + "-"
}

// DefaultDir is the state directory of lab when none is given.
func DefaultDir(lab string) string { return filepath.Join("/run/standby/lab", safeName(lab)) }

// safeName keeps letters, digits, '.', '_' and '-' of s and maps the rest
// to '-'.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "lab"
	}
	return string(b)
}

// ifName is an interface name of at most 15 bytes: a tag letter and eight
// hex digits of a hash of what the interface is for.
func ifName(tag byte, key string) string {
	sum := sha256.Sum256([]byte(key))
	return string(tag) + hex.EncodeToString(sum[:4])
}

// resource is a network resource as created: its definition is the JSON of
// the spec type.
type resource struct {
	Ref provider.Ref    `json:"ref"`
	Job string          `json:"job"`
	Def json.RawMessage `json:"def"`
}

// machine is a started VM: a process group in the VM's namespace.
type machine struct {
	Site string          `json:"site"`
	Name string          `json:"name"`
	Job  string          `json:"job"`
	Def  json.RawMessage `json:"def"`
	// PID leads the machine's session and process group; Ticks is its start
	// time in /proc, which tells it from a later process with the same pid.
	PID   int          `json:"pid"`
	Ticks uint64       `json:"startTicks"`
	IPs   []netip.Addr `json:"ips"`
	Log   string       `json:"log"`
}

func (m *machine) ref() provider.Ref {
	return provider.Ref{Site: m.Site, Kind: provider.KindVM, Name: m.Name}
}

// linkRec is a link as built, to tell whether it must be rebuilt.
type linkRec struct {
	A, B string // namespaces
	AIf  string // the interface in A
	Hash string
}

// state is what a lab keeps in its directory, so that any process (lab
// status, exec, trace, down) sees the lab as built.
type state struct {
	Version   int         `json:"version"`
	Lab       string      `json:"lab"`
	Prefix    string      `json:"prefix"`
	Resources []*resource `json:"resources"`
	Machines  []*machine  `json:"machines"`
	// Namespaces maps each namespace built to the node it is.
	Namespaces map[string]string `json:"namespaces"`
	// Links are the links built, by key.
	Links map[string]linkRec `json:"links"`
	// Slots numbers the /30 of 169.254.0.0/16 each point-to-point link uses.
	Slots map[string]int `json:"slots"`
	// Applied holds a hash of the routes (or rules) last installed per
	// namespace, so that a reconcile touches only what changed.
	Applied map[string]string `json:"applied"`
	// Nodes maps every address in the lab to the node that holds it, for
	// traces: "eastasia/hub-nva", "er-hongkong", "hq" (an on-premises router).
	Nodes map[string]string `json:"nodes"`
	// Preferred is the site whose connections on-premises prefers on equal
	// prefixes (Prefer); empty: source sites before target sites.
	Preferred string `json:"preferred,omitempty"`
}

const stateVersion = 1

func (st *state) init(lab string) {
	if st.Version == 0 {
		st.Version = stateVersion
	}
	st.Lab, st.Prefix = lab, Prefix(lab)
	if st.Namespaces == nil {
		st.Namespaces = map[string]string{}
	}
	if st.Links == nil {
		st.Links = map[string]linkRec{}
	}
	if st.Slots == nil {
		st.Slots = map[string]int{}
	}
	if st.Applied == nil {
		st.Applied = map[string]string{}
	}
	if st.Nodes == nil {
		st.Nodes = map[string]string{}
	}
}

func (st *state) find(ref provider.Ref) *resource {
	for _, r := range st.Resources {
		if r.Ref == ref {
			return r
		}
	}
	return nil
}

func (st *state) machine(ref provider.Ref) *machine {
	for _, m := range st.Machines {
		if m.ref() == ref {
			return m
		}
	}
	return nil
}

// slot returns the /30 number of a link, allocating the lowest free one.
func (st *state) slot(key string) int {
	if n, ok := st.Slots[key]; ok {
		return n
	}
	used := map[int]bool{}
	for _, n := range st.Slots {
		used[n] = true
	}
	n := 1
	for used[n] {
		n++
	}
	st.Slots[key] = n
	return n
}

// slotAddrs returns the two ends of /30 number n in 169.254.0.0/16.
func slotAddrs(n int) (netip.Prefix, netip.Prefix) {
	base := 4 * n
	a := netip.AddrFrom4([4]byte{169, 254, byte(base >> 8), byte(base&0xff) + 1})
	b := netip.AddrFrom4([4]byte{169, 254, byte(base >> 8), byte(base&0xff) + 2})
	return netip.PrefixFrom(a, 30), netip.PrefixFrom(b, 30)
}

func (p *Provider) statePath() string { return filepath.Join(p.opts.Dir, "state.json") }

// withState runs fn on the lab's state under the lab's file lock, and
// writes the state back when write is set and fn succeeded (or changed
// what is built even though it failed: fn returns the state to save).
func (p *Provider) withState(ctx context.Context, write bool, fn func(st *state) error) error {
	if _, err := os.Stat(p.opts.Dir); !write && errors.Is(err, os.ErrNotExist) {
		st := &state{}
		st.init(p.opts.Lab)
		return fn(st) // nothing built: do not make the directory
	}
	unlock, err := lockDir(ctx, p.opts.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := readState(p.statePath())
	if err != nil {
		return err
	}
	st.init(p.opts.Lab)
	ferr := fn(st)
	if write {
		if err := writeState(p.statePath(), st); err != nil {
			return errors.Join(ferr, err)
		}
	}
	return ferr
}

// lockDir takes the lab directory's lock, waiting for other processes.
func lockDir(ctx context.Context, dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: create lab directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("netlab: open lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("netlab: lock %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("netlab: lab directory %s is locked by another process: %w", dir, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func readState(path string) (*state, error) {
	st := &state{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: read state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("netlab: state file %s is damaged: %w; run standby lab down to remove the lab", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("netlab: state file %s has version %d; this build reads %d; run standby lab down", path, st.Version, stateVersion)
	}
	return st, nil
}

func writeState(path string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("netlab: encode state: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("netlab: write state: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("netlab: write state: %w", err)
	}
	return nil
}

// nsName names a namespace of the lab: prefix, kind, and a readable name
// (hashed when too long).
func (p *Provider) nsName(kind, name string) string {
	dotted := strings.ReplaceAll(name, "/", ".")
	s := safeName(dotted)
	if s != dotted || len(s) > 48 {
		sum := sha256.Sum256([]byte(name))
		if len(s) > 40 {
			s = s[:40]
		}
		s += "-" + hex.EncodeToString(sum[:3])
	}
	return p.prefix + kind + "-" + s
}
