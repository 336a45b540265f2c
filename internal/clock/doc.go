// Package clock is the only place that reads the wall clock. Everything that
// needs the time takes a Clock, so tests drive schedules, RPO and retention
// with a Fake instead of sleeping.
//
// It imports nothing from the project.
package clock
