package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/clock"
	"github.com/standby-dr/standby/internal/ship"
)

type receiverOpts struct {
	listen   string
	root     string
	cert     string
	key      string
	clientCA string
	insecure bool
	logLevel string
}

func newReceiverCmd(e *env) *cobra.Command {
	var o receiverOpts
	cmd := &cobra.Command{
		Use:   "receiver --listen ADDR --root DIR",
		Short: "Accept shipped recovery points into the replicas of a recovery site",
		Long: `Runs the recovery-site end of replication: accepts points shipped by
'standby replica sync --to URL' (and agents) into the replicas under --root,
one directory per disk, named by the URL's path: a sender to
https://HOST:PORT/vm1/data writes --root/vm1/data, created on first use.

Every extent is decompressed, checked against its BLAKE3 hash and staged
durably before it is acknowledged; a point is committed only when the sender
says so, with the block hashes of the whole disk. A point interrupted by a
broken connection or a restart of the receiver stays staged, and the sender
resumes it.

Across machines the receiver speaks TLS 1.3 and requires a client
certificate signed by --client-ca. --insecure-loopback serves plain TCP, on
a loopback address only, for tests. Logs go to stderr; SIGTERM or Ctrl-C
stops it cleanly.`,
		Example: `  standby receiver --listen :7443 --root /srv/standby \
      --tls-cert receiver.crt --tls-key receiver.key --client-ca agents-ca.pem
  standby receiver --listen 127.0.0.1:7443 --root /tmp/replicas --insecure-loopback`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReceiver(cmd.Context(), e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "", "address to listen on, HOST:PORT")
	f.StringVar(&o.root, "root", "", "directory holding the replicas, one per VM/disk")
	f.StringVar(&o.cert, "tls-cert", "", "receiver certificate (PEM)")
	f.StringVar(&o.key, "tls-key", "", "receiver private key (PEM)")
	f.StringVar(&o.clientCA, "client-ca", "", "CA certificate (PEM) that client certificates must chain to")
	f.BoolVar(&o.insecure, "insecure-loopback", false, "plain TCP without TLS, allowed on a loopback address only")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func runReceiver(ctx context.Context, e *env, o receiverOpts) error {
	if o.listen == "" || o.root == "" {
		return badInputf("--listen ADDR and --root DIR are both required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return badInputf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	var cfg *tls.Config
	tlsGiven := o.cert != "" || o.key != "" || o.clientCA != ""
	switch {
	case o.insecure && tlsGiven:
		return badInputf("--insecure-loopback and --tls-cert/--tls-key/--client-ca exclude each other")
	case o.insecure:
		if !ship.IsLoopback(o.listen) {
			return badInputf("--insecure-loopback: %s is not a loopback address; plain TCP would expose the replicas: use --tls-cert, --tls-key and --client-ca", o.listen)
		}
	case o.cert == "" || o.key == "" || o.clientCA == "":
		return badInputf("TLS needs --tls-cert, --tls-key and --client-ca (or --insecure-loopback on a loopback address, for tests)")
	default:
		var err error
		if cfg, err = ship.ServerTLS(o.cert, o.key, o.clientCA); err != nil {
			return badInput(err)
		}
	}
	if err := os.MkdirAll(o.root, 0o755); err != nil {
		return fmt.Errorf("receiver: create --root %s: %w", o.root, err)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("receiver: listen on %s: %w (is another process using the port?)", o.listen, err)
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	if e.output == "json" {
		log = slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	}
	mode := "tls"
	if cfg == nil {
		mode = "plain (loopback)"
	}
	log.Info("receiver listening", "addr", ln.Addr().String(), "root", o.root, "mode", mode)
	rc := &ship.Receiver{Root: o.root, TLS: cfg, Log: log, Clock: clock.Real{}}
	err = rc.Serve(ctx, ln)
	st := rc.Stats()
	log.Info("receiver stopped", "extents", st.Extents, "refused", st.Refused, "resent", st.Resent)
	return err
}
