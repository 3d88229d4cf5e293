// Package defaults holds what POST /init sets for everything envd runs
// afterwards: environment variables, the default user and working directory.
package defaults

import (
	"maps"
	"sync"
)

// Defaults is safe for concurrent use.
type Defaults struct {
	mu      sync.RWMutex
	env     map[string]string
	user    string
	workdir string
}

// New returns defaults with the given user and working directory ("" means
// the user's home) and no extra environment.
func New(user, workdir string) *Defaults {
	return &Defaults{env: map[string]string{}, user: user, workdir: workdir}
}

// Env returns a copy of the environment variables set by /init.
func (d *Defaults) Env() map[string]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return maps.Clone(d.env)
}

// MergeEnv adds or replaces environment variables.
func (d *Defaults) MergeEnv(env map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	maps.Copy(d.env, env)
}

// User returns the default user name.
func (d *Defaults) User() string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.user
}

// SetUser changes the default user name.
func (d *Defaults) SetUser(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.user = name
}

// Workdir returns the default working directory, "" meaning the user's home.
func (d *Defaults) Workdir() string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.workdir
}

// SetWorkdir changes the default working directory.
func (d *Defaults) SetWorkdir(dir string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.workdir = dir
}
