package ship

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/clock"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Real{}.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate and key signed by the CA into dir and returns
// their paths.
func (ca *testCA) issue(t *testing.T, dir, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Real{}.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	write(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	return certFile, keyFile
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TLS 1.3 with client certificates: a client with a certificate of the
// receiver's CA ships; one without a certificate, or with one of another
// CA, is refused at once.
func TestTLSClientCertificates(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	ca, other := newTestCA(t, "standby test CA"), newTestCA(t, "another CA")
	caFile := filepath.Join(dir, "ca.pem")
	write(t, caFile, ca.pem)
	srvCert, srvKey := ca.issue(t, dir, "receiver", true)
	cliCert, cliKey := ca.issue(t, dir, "agent", false)
	badCert, badKey := other.issue(t, dir, "intruder", false)

	srvTLS, err := ServerTLS(srvCert, srvKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	tr := startReceiver(t, root, srvTLS)
	url := "https://" + tr.addr + "/vm1/data"
	src := filepath.Join(dir, "disk.img")
	makeImage(t, src, 6, 11)

	good, err := ClientTLS(cliCert, cliKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctx, url, Options{TLS: good, Streams: 3, Size: 6 * testBlock, BlockSize: testBlock})
	if err != nil {
		t.Fatal(err)
	}
	p, err := push(ctx, c, src, dir, 3)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, cert, key string }{
		{"no client certificate", "", ""},
		{"a certificate of another CA", badCert, badKey},
	} {
		cfg, err := ClientTLS(tc.cert, tc.key, caFile)
		if err != nil {
			t.Fatal(err)
		}
		start := clock.Real{}.Now()
		c, err := Dial(ctx, url, Options{TLS: cfg, Size: 6 * testBlock})
		if err == nil {
			c.Close()
			t.Errorf("%s: the receiver accepted the client", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: error %q does not speak of the certificate", tc.name, err)
		}
		if d := (clock.Real{}).Since(start); d > 5*time.Second {
			t.Errorf("%s: refused after %s, want at once", tc.name, d)
		}
	}
	// A client that does not trust the receiver's CA refuses it.
	noCA, err := ClientTLS(cliCert, cliKey, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err = Dial(ctx, url, Options{TLS: noCA})
	if err == nil {
		c.Close()
		t.Error("the client trusted a receiver certificate of an unknown CA")
	}
	tr.stop()
	if got := pointHash(t, replicaDir(root, "vm1/data"), p.Seq); got != fileHash(t, src) {
		t.Error("the point differs from the source")
	}
}
