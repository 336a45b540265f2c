package providertest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Environment of the test machine.
const (
	envRole       = "STANDBY_PROVIDERTEST_VM"          // "machine" or "child"
	envPort       = "STANDBY_PROVIDERTEST_PORT"        // port to serve on
	envPidDir     = "STANDBY_PROVIDERTEST_DIR"         // where to record pids
	envIgnoreTerm = "STANDBY_PROVIDERTEST_IGNORE_TERM" // "1": ignore SIGTERM
)

// ServeVMIfAsked turns the running test binary into a test machine when it
// was started as one by the suite, and never returns then. Call it first in
// TestMain.
func ServeVMIfAsked() {
	switch os.Getenv(envRole) {
	case "":
		return
	case "child":
		if os.Getenv(envIgnoreTerm) == "1" {
			signal.Ignore(syscall.SIGTERM)
		}
		select {}
	}
	os.Exit(serveVM())
}

// serveVM is the test machine: it starts a child in its process group,
// records both pids with their start times, and serves
//
//	/health      200
//	/whoami/SITE 200 when this machine runs at SITE, else 404
//	/env/NAME    the value of an environment variable
func serveVM() int {
	if os.Getenv(envIgnoreTerm) == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	child := exec.Command(self, "-test.run=^$")
	child.Env = append(os.Environ(), envRole+"=child")
	if err := child.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	site, name := os.Getenv("STANDBY_SITE"), os.Getenv("STANDBY_VM")
	if dir := os.Getenv(envPidDir); dir != "" {
		var b strings.Builder
		for _, pid := range []int{os.Getpid(), child.Process.Pid} {
			fmt.Fprintf(&b, "%d %d\n", pid, startTicks(pid))
		}
		f := filepath.Join(dir, site+"-"+name+".pids")
		if err := os.WriteFile(f+".tmp", []byte(b.String()), 0o644); err == nil {
			os.Rename(f+".tmp", f)
		}
	}
	addr := net.JoinHostPort(os.Getenv("STANDBY_IP_0"), os.Getenv(envPort))
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/env/{name}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, os.Getenv(r.PathValue("name"))) })
	mux.HandleFunc("/whoami/{site}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("site") != site {
			http.Error(w, "this is "+site+"/"+name, http.StatusNotFound)
			return
		}
		fmt.Fprintln(w, site+"/"+name)
	})
	err = http.ListenAndServe(addr, mux)
	fmt.Fprintln(os.Stderr, err)
	return 3
}

// startTicks is the start time of pid in /proc; 0 when it is gone.
func startTicks(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0
	}
	t, _ := strconv.ParseUint(f[19], 10, 64)
	return t
}
