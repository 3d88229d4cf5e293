package plan

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"
)

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		failAt  string // step whose Do fails
		done    map[string]bool
		undoErr string // step whose Undo fails
		want    []string
		wantErr bool
	}{
		{name: "all succeed", want: []string{"do a", "do b", "do c"}},
		{name: "done steps are skipped", done: map[string]bool{"b": true}, want: []string{"do a", "do c"}},
		{name: "failure undoes in reverse", failAt: "c", want: []string{"do a", "do b", "do c", "undo b", "undo a"}, wantErr: true},
		{name: "a done step is still undone on failure", failAt: "c", done: map[string]bool{"a": true}, want: []string{"do b", "do c", "undo b", "undo a"}, wantErr: true},
		{name: "rollback carries on past undo errors", failAt: "c", undoErr: "b", want: []string{"do a", "do b", "do c", "undo b", "undo a"}, wantErr: true},
		{name: "first step fails: nothing to undo", failAt: "a", want: []string{"do a"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			mk := func(name string) Step {
				return Step{
					Name: name,
					Done: func(context.Context) (bool, error) { return tt.done[name], nil },
					Do: func(context.Context) error {
						got = append(got, "do "+name)
						if name == tt.failAt {
							return boom
						}
						return nil
					},
					Undo: func(context.Context) error {
						got = append(got, "undo "+name)
						if name == tt.undoErr {
							return errors.New("undo failed")
						}
						return nil
					},
				}
			}
			err := Run(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), []Step{mk("a"), mk("b"), mk("c")})
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("calls = %q, want %q", got, tt.want)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Step != tt.failAt || !errors.Is(err, boom) {
				t.Fatalf("err = %#v, want *Error for step %s wrapping boom", err, tt.failAt)
			}
			if (pe.Rollback != nil) != (tt.undoErr != "") {
				t.Fatalf("rollback error = %v, want one: %v", pe.Rollback, tt.undoErr != "")
			}
		})
	}
}

func TestRunStopsOnCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var undone bool
	steps := []Step{
		{Name: "a", Do: func(context.Context) error { cancel(); return nil }, Undo: func(context.Context) error { undone = true; return nil }},
		{Name: "b", Do: func(context.Context) error { t.Fatal("b must not run after cancel"); return nil }},
	}
	err := Run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), steps)
	if !errors.Is(err, context.Canceled) || !undone {
		t.Fatalf("err = %v, undone = %v; want context.Canceled and a rollback", err, undone)
	}
}

func TestUndoJoinsErrors(t *testing.T) {
	var order []string
	steps := []Step{
		{Name: "a", Undo: func(context.Context) error { order = append(order, "a"); return errors.New("a failed") }},
		{Name: "b"},
		{Name: "c", Undo: func(context.Context) error { order = append(order, "c"); return nil }},
	}
	err := Undo(context.Background(), steps)
	if err == nil || !reflect.DeepEqual(order, []string{"c", "a"}) {
		t.Fatalf("err = %v, order = %v", err, order)
	}
}
