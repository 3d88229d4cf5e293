// Package plan runs a lifecycle operation (create, resume, fork, destroy) as
// an ordered list of named, idempotent steps, undoing completed steps in
// reverse when a later one fails.
//
// Each step can say whether its effect already exists on the host (Done), so
// a plan re-run after a crash only does what is missing.
package plan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Step is one named piece of an operation.
type Step struct {
	Name string
	// Done reports whether the step's effect already exists (e.g. the netns
	// is there). Nil means "never done": Do always runs.
	Done func(ctx context.Context) (bool, error)
	// Do performs the step. It must leave nothing behind when it fails.
	Do func(ctx context.Context) error
	// Undo reverses Do. Nil means nothing to undo. Undoing an absent effect
	// succeeds.
	Undo func(ctx context.Context) error
}

// Error reports which step failed and what the rollback hit.
type Error struct {
	Step string
	Err  error
	// Rollback joins the errors of undo steps that failed, if any.
	Rollback error
}

func (e *Error) Error() string {
	if e.Rollback != nil {
		return fmt.Sprintf("step %s: %v (rollback: %v)", e.Step, e.Err, e.Rollback)
	}
	return fmt.Sprintf("step %s: %v", e.Step, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Run performs steps in order, skipping those already Done. When a step
// fails, the undos of every step that ran (or was found done) are called in
// reverse order, carrying on past their errors, with a context that is not
// cancelled by ctx so that cleanup completes. The logger gets one line per
// step with its duration.
func Run(ctx context.Context, logger *slog.Logger, steps []Step) error {
	var undos []Step
	for _, s := range steps {
		start := time.Now()
		done := false
		if s.Done != nil {
			var err error
			if done, err = s.Done(ctx); err != nil {
				return rollback(ctx, logger, undos, &Error{Step: s.Name, Err: fmt.Errorf("check: %w", err)})
			}
		}
		if !done {
			if err := ctx.Err(); err != nil {
				return rollback(ctx, logger, undos, &Error{Step: s.Name, Err: err})
			}
			if err := s.Do(ctx); err != nil {
				return rollback(ctx, logger, undos, &Error{Step: s.Name, Err: err})
			}
		}
		undos = append(undos, s)
		logger.Debug("step done", "step", s.Name, "skipped", done, "duration", time.Since(start))
	}
	return nil
}

func rollback(ctx context.Context, logger *slog.Logger, undos []Step, failure *Error) error {
	cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var errs []error
	for i := len(undos) - 1; i >= 0; i-- {
		s := undos[i]
		if s.Undo == nil {
			continue
		}
		if err := s.Undo(cleanupCtx); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", s.Name, err))
		}
	}
	failure.Rollback = errors.Join(errs...)
	logger.Debug("plan rolled back", "failed_step", failure.Step, "rollback_errors", len(errs))
	return failure
}

// Undo runs the undo of every step in reverse order (the destroy path),
// carrying on past errors, and returns them joined.
func Undo(ctx context.Context, steps []Step) error {
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i].Undo == nil {
			continue
		}
		if err := steps[i].Undo(ctx); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", steps[i].Name, err))
		}
	}
	return errors.Join(errs...)
}
