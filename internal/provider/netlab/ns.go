package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps named network namespaces.
const netnsDir = "/run/netns"

// inNS runs fn on an OS thread that has entered namespace ns, and returns
// its error. Sockets fn opens stay in ns; a process fn starts is born in ns.
// The thread goes back to its own namespace afterwards; if it cannot, it is
// never unlocked, so that the runtime discards it when the goroutine ends.
func inNS(ns string, fn func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// sysctls writes net sysctls (dotted names) inside ns.
func sysctls(ns string, kv [][2]string) error {
	return inNS(ns, func() error {
		for _, e := range kv {
			path := "/proc/sys/" + strings.ReplaceAll(e[0], ".", "/")
			if err := os.WriteFile(path, []byte(e[1]), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", e[0], e[1], err)
			}
		}
		return nil
	})
}

// runIn runs argv inside ns (the root namespace when ns is ""), feeding it
// stdin, and returns its output; a failure carries what it printed.
func runIn(ctx context.Context, ns, stdin string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var err error
	if ns == "" {
		err = cmd.Start()
	} else {
		err = inNS(ns, cmd.Start)
	}
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ipBatch runs iproute2 commands (one a line, without the leading "ip")
// in ns, all of them in one process.
func ipBatch(ctx context.Context, ns string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	args := []string{"ip"}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	args = append(args, "-batch", "-")
	_, err := runIn(ctx, "", strings.Join(lines, "\n")+"\n", args...)
	return err
}

// listNamespaces lists the named namespaces that start with prefix.
func listNamespaces(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// nsPids lists the processes inside ns.
func nsPids(ctx context.Context, ns string) []int {
	out, err := runIn(ctx, "", "", "ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteNamespace kills whatever still runs in ns and removes it; a
// missing namespace is no error.
func deleteNamespace(ctx context.Context, ns string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, pid := range nsPids(ctx, ns) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_, err := runIn(ctx, "", "", "ip", "netns", "del", ns)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	return nil
}
