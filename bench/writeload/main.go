// Command writeload is bench/rpo's writer: random writes of 4 KiB to 1 MiB
// (4 KiB aligned, random content) to a disk file, at a steady rate or as
// fast as it can, for a while. It prints, as JSON, the bytes written, the
// throughput and the write latencies; with --status it also samples the
// RPO a standby replica serve reports, once a second.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

type result struct {
	Seconds      float64 `json:"seconds"`
	Writes       int64   `json:"writes"`
	Bytes        int64   `json:"bytes"`
	MBPerSec     float64 `json:"mbPerSec"`
	LatencyP50Ms float64 `json:"latencyP50Ms"`
	LatencyP99Ms float64 `json:"latencyP99Ms"`
	RPOSamples   int     `json:"rpoSamples,omitempty"`
	RPOP50       float64 `json:"rpoP50Seconds,omitempty"`
	RPOP99       float64 `json:"rpoP99Seconds,omitempty"`
	RPOMax       float64 `json:"rpoMaxSeconds,omitempty"`
}

func main() {
	file := flag.String("file", "", "disk file to write")
	rate := flag.Float64("rate", 0, "MB/s (10^6) to write at; 0: as fast as possible")
	dur := flag.Duration("duration", 10*time.Second, "how long to write")
	status := flag.String("status", "", "status file of a replica serve to sample the RPO from")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if err := run(*file, *rate, *dur, *status, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "writeload:", err)
		os.Exit(1)
	}
}

func run(file string, rate float64, dur time.Duration, status string, seed uint64) error {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	// A pool of random data the writes are cut from; page-aligned so a
	// 1 MiB write reaches a FUSE server as one request.
	const pool = 64 << 20
	data, err := syscall.Mmap(-1, 0, pool, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	for i := 0; i+8 <= len(data); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			data[i+k] = byte(v >> (8 * k))
		}
	}
	clk := clock.Real{}
	var res result
	var lat []time.Duration
	var rpos []float64
	start := clk.Now()
	nextSample := start
	for clk.Since(start) < dur {
		n := int64(1+rng.IntN(256)) * 4096
		off := rng.Int64N((size-n)/4096+1) * 4096
		src := rng.Int64N((pool-n)/4096+1) * 4096
		t0 := clk.Now()
		if _, err := f.WriteAt(data[src:src+n], off); err != nil {
			return err
		}
		lat = append(lat, clk.Since(t0))
		res.Writes++
		res.Bytes += n
		if rate > 0 {
			// Pace: the bytes so far are due at this instant.
			due := start.Add(time.Duration(float64(res.Bytes) / (rate * 1e6) * float64(time.Second)))
			if d := due.Sub(clk.Now()); d > 0 {
				time.Sleep(d)
			}
		}
		if status != "" && !clk.Now().Before(nextSample) {
			nextSample = nextSample.Add(time.Second)
			if r, ok := sampleRPO(status); ok {
				rpos = append(rpos, r)
			}
		}
	}
	res.Seconds = clk.Since(start).Seconds()
	res.MBPerSec = float64(res.Bytes) / res.Seconds / 1e6
	slices.Sort(lat)
	if len(lat) > 0 {
		res.LatencyP50Ms = float64(lat[len(lat)/2]) / 1e6
		res.LatencyP99Ms = float64(lat[len(lat)*99/100]) / 1e6
	}
	if len(rpos) > 0 {
		slices.Sort(rpos)
		res.RPOSamples = len(rpos)
		res.RPOP50 = rpos[len(rpos)/2]
		res.RPOP99 = rpos[len(rpos)*99/100]
		res.RPOMax = rpos[len(rpos)-1]
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// sampleRPO reads the RPO from a serve's status file, where the status was
// written in the last two seconds (as it is each second).
func sampleRPO(path string) (float64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	var st struct {
		Time time.Time `json:"time"`
		RPO  *float64  `json:"rpoSeconds"`
	}
	if json.Unmarshal(b, &st) != nil || st.RPO == nil {
		return 0, false
	}
	// The status is up to a second old: its RPO then was that much lower
	// than now; add the age so each sample is the RPO at this instant.
	age := clock.Real{}.Since(st.Time).Seconds()
	return *st.RPO + max(age, 0), true
}
