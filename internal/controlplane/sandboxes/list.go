package sandboxes

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// ListOptions filter and page a listing.
type ListOptions struct {
	// States to show; empty: Listed.
	States []State
	// Metadata every listed sandbox's metadata contains.
	Metadata map[string]string
	// Limit is the page size (1-1000; 0: 100).
	Limit int
	// Cursor is a previous page's Next.
	Cursor string
}

// Page is one page of a listing, newest first.
type Page struct {
	Sandboxes []store.Sandbox
	// Next continues the listing; "" on the last page.
	Next string
}

// MaxListLimit is the largest page.
const MaxListLimit = 1000

// List pages through a team's sandboxes, newest first, by (created_at, id)
// keyset: a page is one index range scan however deep.
func (s *Service) List(ctx context.Context, team uuid.UUID, o ListOptions) (Page, error) {
	states := o.States
	if len(states) == 0 {
		states = Listed
	}
	metaJSON, err := json.Marshal(nonNilMap(o.Metadata))
	if err != nil {
		return Page{}, fmt.Errorf("encode metadata filter: %w", err)
	}
	limit := o.Limit
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > MaxListLimit {
		return Page{}, errdefs.New(errdefs.ErrInvalidArgument, "limit %d: must be 1-%d", limit, MaxListLimit)
	}
	// One row more than asked tells whether another page follows.
	var rows []store.Sandbox
	if o.Cursor != "" {
		at, id, err := parseCursor(o.Cursor)
		if err != nil {
			return Page{}, err
		}
		rows, err = s.q.ListTeamSandboxesAfter(ctx, store.ListTeamSandboxesAfterParams{
			TeamID: team, States: Strings(states), Metadata: metaJSON,
			AfterCreatedAt: at, AfterID: id, MaxRows: int32(limit + 1),
		})
		if err != nil {
			return Page{}, fmt.Errorf("list sandboxes: %w", err)
		}
	} else {
		rows, err = s.q.ListTeamSandboxes(ctx, store.ListTeamSandboxesParams{
			TeamID: team, States: Strings(states), Metadata: metaJSON, MaxRows: int32(limit + 1),
		})
		if err != nil {
			return Page{}, fmt.Errorf("list sandboxes: %w", err)
		}
	}
	var p Page
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[len(rows)-1]
		p.Next = cursor(last.CreatedAt, last.ID)
	}
	p.Sandboxes = rows
	return p, nil
}

// cursor encodes a keyset position. Microseconds are PostgreSQL's
// precision, so the position round-trips exactly.
func cursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

func parseCursor(c string) (time.Time, string, error) {
	bad := errdefs.New(errdefs.ErrInvalidArgument, "cursor %q is not one this API returned", c)
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	us, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(us, 10, 64)
	// The id goes to PostgreSQL: NUL or invalid UTF-8 in it would be a 500.
	if !ok || err != nil || id == "" || !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(n).UTC(), id, nil
}
