// Package providertest is the conformance suite of the provider interface:
// Run checks any implementation for the contract in package provider's
// documentation (create twice is one resource, delete of a missing one
// succeeds, list shows exactly what the tags say, cleanup leaves nothing,
// no process of a machine outlives it).
//
// Machines in the suite run the test binary itself as their boot command:
// the implementation's test calls ServeVMIfAsked first thing in TestMain,
// and the binary then acts as a small machine (an HTTP server on
// STANDBY_IP_0 that also starts a child process) instead of running tests.
//
// It imports provider and spec, and no implementation.
package providertest
