package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
)

// density starts idle sandboxes from the template, one after another,
// until the Σ PSS of their VMMs reaches the budget or the count its
// maximum; then, after they have sat idle, it reports the count and each
// sandbox's PSS. The goal (snapshot issue) is idle PSS per sandbox ≤ 40%
// of guest RAM.
func (b *bench) density(ctx context.Context) {
	limit := 0.4 * float64(b.cfg.MemoryMB)
	count := &Figure{Key: "density-count", Name: fmt.Sprintf("density: idle %d MiB sandboxes started within the budget", b.cfg.MemoryMB), Unit: "sandboxes"}
	pss := (&Figure{Key: "density-pss", Name: "density: host PSS per idle sandbox (its VMM)", Unit: "MiB"}).atMost(limit)
	defer func() { b.add(GroupWrenn, count, pss) }()
	if err := b.template(ctx); err != nil {
		count.failed(err)
		pss.failed(err)
		return
	}
	budget := int64(b.cfg.DensityBudgetMB) << 20
	var ids []string
	defer func() {
		if err := destroyIDs(context.WithoutCancel(ctx), b.m, ids); err != nil {
			count.note("destroying the sandboxes: %v", err)
		}
	}()
	var total int64
	stop := fmt.Sprintf("reached --density-max %d", b.cfg.DensityMax)
	for len(ids) < b.cfg.DensityMax {
		if ctx.Err() != nil {
			count.failed(ctx.Err())
			pss.failed(ctx.Err())
			return
		}
		info, err := b.m.Create(ctx, agent.CreateRequest{Template: templateName})
		if err != nil {
			// Running out of host memory or slots is a result here.
			stop = "a create failed: " + err.Error()
			break
		}
		ids = append(ids, info.ID)
		if err := execTrue(ctx, b.m, info.ID); err != nil {
			stop = "an exec failed: " + err.Error()
			break
		}
		if total, err = b.sumPss(ctx, ids); err != nil {
			count.failed(err)
			pss.failed(err)
			return
		}
		if total >= budget {
			stop = fmt.Sprintf("Σ PSS %d MiB reached the budget of %d MiB", total>>20, budget>>20)
			break
		}
	}
	if len(ids) == 0 {
		count.failed(errors.New(stop))
		pss.failed(errors.New(stop))
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(b.cfg.Settle):
	}
	var per []float64
	var shmem, files int64
	total = 0
	for _, id := range ids {
		info, err := b.m.Get(ctx, id)
		if err != nil {
			pss.failed(err)
			return
		}
		p, err := readPss(info.PID)
		if err != nil {
			pss.failed(err)
			return
		}
		per = append(per, float64(p.Total)/(1<<20))
		total, shmem = total+p.Total, shmem+p.Shmem
		if n, err := allocated(filepath.Join(b.w.memDir, id+".mem")); err == nil {
			files += n
		}
	}
	*count = *values(count.Key, count.Name, count.Unit, []float64{float64(len(ids))})
	count.note("stopped because %s; budget %d MiB of Σ VMM PSS", stop, b.cfg.DensityBudgetMB)
	*pss = *values(pss.Key, pss.Name, pss.Unit, per).atMost(limit)
	n := int64(len(ids))
	pss.note("one sample per sandbox, read %s after the last one answered an exec; goal: ≤ 40%% of %d MiB guest RAM", b.cfg.Settle, b.cfg.MemoryMB)
	pss.note("Σ PSS %d MiB for %d sandboxes; of it guest RAM pages mapped from the tmpfs files (Pss_Shmem) %d MiB, the VMMs' own memory %d MiB",
		total>>20, n, shmem>>20, (total-shmem)>>20)
	pss.note("PSS counts only mapped pages: the guest RAM files hold %d MiB (%d MiB per sandbox); host memory held = VMM own + RAM files = %d MiB per sandbox",
		files>>20, files/n>>20, (total-shmem+files)/n>>20)
}

// sumPss is Σ PSS of the sandboxes' VMMs.
func (b *bench) sumPss(ctx context.Context, ids []string) (int64, error) {
	var total int64
	for _, id := range ids {
		info, err := b.m.Get(ctx, id)
		if err != nil {
			return 0, err
		}
		p, err := readPss(info.PID)
		if err != nil {
			return 0, err
		}
		total += p.Total
	}
	return total, nil
}
