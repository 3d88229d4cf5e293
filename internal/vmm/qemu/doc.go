// Package qemu is the vmm.Driver for qemu-system-x86_64 -M microvm: it builds
// QEMU's command line, starts QEMU detached from the agent, drives it over
// QMP (pause, resume, snapshot, restore, stop), copies the serial console to
// a bounded log, and re-adopts QEMU processes left by an earlier agent.
package qemu
