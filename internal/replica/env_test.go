package replica

import (
	"os"
	"testing"
)

// skipOrFail skips a test that needs something this machine lacks, except in
// CI (STANDBY_TEST_REQUIRE_ALL=1), where the skip is a failure.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("STANDBY_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (STANDBY_TEST_REQUIRE_ALL=1 forbids skipping)", why)
	}
	t.Skip(why)
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}
