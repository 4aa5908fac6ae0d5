//! Happens-before over one execution, from the steps' footprints: vector clocks, immediate
//! races (dependent steps of different actors with nothing in between ordering them), and
//! the causal cone of a step (everything it depends on).
//!
//! Two steps are dependent when their footprints conflict (an object in common, one writes).
//! Per object, only the last write and the reads since are candidates for a race with a new
//! step: anything older is ordered before them already.
//!
//! Locks: an acquisition can never be moved before the release it waited for, so a race
//! between a release and a later acquisition of the same lock is reported as a race between
//! that acquisition and the one that began the released critical section — the two
//! acquisitions are what can be reordered (Abdulla et al., JACM 2017, on blocking).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use world::{Access, FpSet, ObjId, OpKind};

/// One step of an execution: who took it, what kind of step, and what it touched.
#[derive(Copy, Clone, Debug)]
pub struct Event {
    pub actor: u8,
    pub kind: OpKind,
    pub fp: FpSet,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            actor: 0,
            kind: OpKind::Start,
            fp: FpSet::new(),
        }
    }
}

impl Event {
    /// The lock this step acquires (or tries to).
    fn acquires(&self) -> Option<ObjId> {
        match self.kind {
            OpKind::Lock(l, _) | OpKind::TryLock(l) => Some(l.0),
            _ => None,
        }
    }

    fn releases(&self) -> Option<ObjId> {
        match self.kind {
            OpKind::Unlock(l) => Some(l.0),
            _ => None,
        }
    }
}

/// A multiplicative hasher for object ids (which are already well spread).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

const NONE: u32 = u32::MAX;

/// Key of (actor, lock) in a map of lock holders.
fn lock_key(actor: u8, l: ObjId) -> u64 {
    (u64::from(actor) << 56) ^ l.0
}

/// Per object: the last write and the reads since (a list in [`Hb::reads`]).
#[derive(Copy, Clone)]
struct Track {
    last_write: u32,
    /// Head of the list of reads since the last write, or `NONE`.
    reads: u32,
}

/// Ranges longer than this are not expanded object by object but compared step by step.
const EXPAND: u64 = 64;

/// A view of items as events.
struct Items<'a, T> {
    items: &'a [T],
    ev: &'a dyn Fn(&T) -> &Event,
}

impl<T> Items<'_, T> {
    fn get(&self, i: usize) -> &Event {
        (self.ev)(&self.items[i])
    }
}

/// Vector clocks of one execution.
#[derive(Default)]
pub struct Hb {
    actors: usize,
    /// `vc[e * actors + a]`: how many of actor `a`'s steps happen before (or are) step `e`.
    vc: Vec<u32>,
    /// Per step: its 1-based index among its actor's steps.
    local: Vec<u32>,
    actor: Vec<u8>,
    objs: IdMap<Track>,
    /// Steps with a footprint entry too wide to expand.
    wide: Vec<u32>,
    last_of: Vec<u32>,
    count_of: Vec<u32>,
    cand: Vec<u32>,
    /// Read lists: (step, next entry).
    reads: Vec<(u32, u32)>,
    /// Per (actor, lock): the step that last acquired it.
    holding: IdMap<u32>,
    /// Per release step: the acquisition that began its critical section.
    section: IdMap<u32>,
    /// Undo log of the map changes, per step (see [`Hb::analyze_from`]).
    undo: Vec<Undo>,
    marks: Vec<Mark>,
}

/// One change to undo.
enum Undo {
    Obj(u64, Option<Track>),
    Holding(u64, Option<u32>),
    Section(u64),
}

/// What a step changed outside the undo log.
struct Mark {
    undo: u32,
    reads: u32,
    wide: u32,
    actor: u8,
    last_of: u32,
    count_of: u32,
}

impl Hb {
    /// Vector clocks for `events`; immediate races `(i, j)` with `j >= race_from` go to
    /// `races`. Storage is reused across calls.
    pub fn analyze(
        &mut self,
        events: &[Event],
        actors: usize,
        race_from: usize,
        races: &mut Vec<(u32, u32)>,
    ) {
        self.analyze_by(events, |e| e, actors, race_from, races)
    }

    /// [`Hb::analyze`] over items that hold an event.
    pub fn analyze_by<T>(
        &mut self,
        items: &[T],
        ev: impl Fn(&T) -> &Event,
        actors: usize,
        race_from: usize,
        races: &mut Vec<(u32, u32)>,
    ) {
        self.reset(actors);
        self.analyze_from(items, ev, actors, 0, race_from, races);
    }

    fn reset(&mut self, actors: usize) {
        self.actors = actors.max(1);
        self.vc.clear();
        self.local.clear();
        self.actor.clear();
        self.objs.clear();
        self.reads.clear();
        self.wide.clear();
        self.last_of.clear();
        self.last_of.resize(self.actors, NONE);
        self.count_of.clear();
        self.count_of.resize(self.actors, 0);
        self.holding.clear();
        self.section.clear();
        self.undo.clear();
        self.marks.clear();
    }

    /// Incremental [`Hb::analyze_by`]: the first `keep` items are the ones the previous
    /// call analyzed (an explorer re-running a prefix of choices); only the rest is new.
    pub fn analyze_from<T>(
        &mut self,
        items: &[T],
        ev: impl Fn(&T) -> &Event,
        actors: usize,
        keep: usize,
        race_from: usize,
        races: &mut Vec<(u32, u32)>,
    ) {
        if actors.max(1) != self.actors {
            self.reset(actors);
        }
        self.rollback(keep.min(self.marks.len()));
        let from = self.marks.len();
        self.vc.resize(items.len() * self.actors, 0);
        let events = Items { items, ev: &ev };
        for j in from..items.len() {
            let e = events.get(j);
            self.step(&events, j, e, j >= race_from, races);
        }
    }

    /// Forget every step from `to` on.
    fn rollback(&mut self, to: usize) {
        while self.marks.len() > to {
            let m = self.marks.pop().expect("non-empty");
            while self.undo.len() > m.undo as usize {
                match self.undo.pop().expect("non-empty") {
                    Undo::Obj(k, Some(t)) => {
                        self.objs.insert(k, t);
                    }
                    Undo::Obj(k, None) => {
                        self.objs.remove(&k);
                    }
                    Undo::Holding(k, Some(v)) => {
                        self.holding.insert(k, v);
                    }
                    Undo::Holding(k, None) => {
                        self.holding.remove(&k);
                    }
                    Undo::Section(k) => {
                        self.section.remove(&k);
                    }
                }
            }
            self.reads.truncate(m.reads as usize);
            self.wide.truncate(m.wide as usize);
            self.last_of[m.actor as usize] = m.last_of;
            self.count_of[m.actor as usize] = m.count_of;
        }
        self.vc.truncate(to * self.actors);
        self.local.truncate(to);
        self.actor.truncate(to);
    }

    fn step<T>(
        &mut self,
        events: &Items<'_, T>,
        j: usize,
        e: &Event,
        report: bool,
        races: &mut Vec<(u32, u32)>,
    ) {
        let a = e.actor as usize;
        let n = self.actors;
        self.marks.push(Mark {
            undo: self.undo.len() as u32,
            reads: self.reads.len() as u32,
            wide: self.wide.len() as u32,
            actor: e.actor,
            last_of: self.last_of[a],
            count_of: self.count_of[a],
        });
        // Candidates: the conflicting accesses no later access of the same object follows.
        self.cand.clear();
        let mut wide = false;
        for f in e.fp.iter() {
            if u64::from(f.len()) > EXPAND {
                wide = true;
                continue;
            }
            for k in 0..u64::from(f.len()) {
                let id = f.obj().0 + k;
                if let Some(t) = self.objs.get(&id) {
                    if t.last_write != NONE {
                        self.cand.push(t.last_write);
                    }
                    if f.access() == Access::Write {
                        let mut r = t.reads;
                        while r != NONE {
                            let (ev, next) = self.reads[r as usize];
                            self.cand.push(ev);
                            r = next;
                        }
                    }
                }
            }
        }
        // Wide entries (rare): compare with every earlier step that had one, and a wide
        // step with every earlier step.
        for &w in &self.wide {
            if events.get(w as usize).fp.conflicts(&e.fp) {
                self.cand.push(w);
            }
        }
        if wide {
            for i in 0..j {
                if events.get(i).fp.conflicts(&e.fp) {
                    self.cand.push(i as u32);
                }
            }
            self.wide.push(j as u32);
        }
        self.cand.sort_unstable();
        self.cand.dedup();
        // The clock: program order, then every dependency.
        let prev = self.last_of[a];
        let base = j * n;
        if prev != NONE {
            let p = prev as usize * n;
            self.vc.copy_within(p..p + n, base);
        }
        for &c in &self.cand {
            let c = c as usize * n;
            for x in 0..n {
                self.vc[base + x] = self.vc[base + x].max(self.vc[c + x]);
            }
        }
        self.count_of[a] += 1;
        self.vc[base + a] = self.count_of[a];
        self.local.push(self.count_of[a]);
        self.actor.push(e.actor);
        self.last_of[a] = j as u32;
        // Immediate races: candidates of other actors not ordered before another candidate
        // or before this actor's previous step.
        if report {
            for (ci, &c) in self.cand.iter().enumerate() {
                let ca = self.actor[c as usize] as usize;
                if ca == a {
                    continue;
                }
                let lc = self.local[c as usize];
                if prev != NONE && self.vc[prev as usize * n + ca] >= lc {
                    continue;
                }
                let covered = self
                    .cand
                    .iter()
                    .enumerate()
                    .any(|(di, &d)| di != ci && self.vc[d as usize * n + ca] >= lc);
                if covered {
                    continue;
                }
                // A release before this acquisition: the acquisitions race.
                let lock = e.acquires();
                let c_ev = events.get(c as usize);
                match (lock, c_ev.releases()) {
                    (Some(l), Some(r)) if l == r => {
                        if let Some(&acq) = self.section.get(&u64::from(c)) {
                            races.push((acq, j as u32));
                        }
                    }
                    _ => races.push((c, j as u32)),
                }
            }
        }
        if let Some(l) = e.acquires() {
            let k = lock_key(e.actor, l);
            let old = self.holding.insert(k, j as u32);
            self.undo.push(Undo::Holding(k, old));
        }
        if let Some(l) = e.releases() {
            if let Some(&acq) = self.holding.get(&lock_key(e.actor, l)) {
                self.section.insert(j as u64, acq);
                self.undo.push(Undo::Section(j as u64));
            }
        }
        // Record this step's accesses.
        for f in e.fp.iter() {
            if u64::from(f.len()) > EXPAND {
                continue;
            }
            for k in 0..u64::from(f.len()) {
                let key = f.obj().0 + k;
                let t = self.objs.entry(key).or_insert(Track {
                    last_write: NONE,
                    reads: NONE,
                });
                let old = *t;
                self.undo.push(Undo::Obj(
                    key,
                    (old.last_write != NONE || old.reads != NONE).then_some(old),
                ));
                match f.access() {
                    Access::Write => {
                        t.last_write = j as u32;
                        t.reads = NONE;
                    }
                    Access::Read => {
                        self.reads.push((j as u32, t.reads));
                        t.reads = self.reads.len() as u32 - 1;
                    }
                }
            }
        }
    }

    /// Whether step `i` happens before (or is) step `j`.
    pub fn before(&self, i: usize, j: usize) -> bool {
        i == j || self.vc[j * self.actors + self.actor[i] as usize] >= self.local[i]
    }

    /// How many of actor `b`'s steps happen before (or are) step `i`.
    pub fn clock(&self, i: usize, b: usize) -> u32 {
        self.vc[i * self.actors + b]
    }

    /// Actor of step `i`.
    pub fn actor(&self, i: usize) -> u8 {
        self.actor[i]
    }

    /// Steps `0..=v` that happen before step `v` (its causal cone), ascending.
    pub fn cone(&self, v: usize) -> Vec<usize> {
        (0..=v).filter(|&i| self.before(i, v)).collect()
    }

    /// Source-DPOR's initials of `notdep(e_i).e_j`: the actors whose first step in that
    /// sequence depends on nothing earlier in it, as a bit mask; `e_j`'s actor is in it only
    /// if it takes no step between `i` and `j` (then its first step there is `e_j` itself).
    pub fn initials(&self, i: usize, j: usize) -> u64 {
        let ai = self.actor[i] as usize;
        let li = self.local[i];
        let n = self.actors;
        let mut seen: u64 = 0;
        let mut first: Vec<usize> = Vec::with_capacity(8);
        let mut out: u64 = 0;
        let consider = |k: usize, seen: &mut u64, first: &mut Vec<usize>, out: &mut u64| {
            let a = self.actor[k];
            if *seen & (1 << a) != 0 {
                return;
            }
            *seen |= 1 << a;
            // Initial iff no earlier first step (of another actor, in v) happens before it.
            if first.iter().all(|&f| !self.before(f, k)) {
                *out |= 1 << a;
            }
            first.push(k);
        };
        for k in i + 1..j {
            // In notdep(e_i): not after e_i.
            if self.vc[k * n + ai] >= li {
                continue;
            }
            consider(k, &mut seen, &mut first, &mut out);
        }
        consider(j, &mut seen, &mut first, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use world::Class;

    fn ev(actor: u8, obj: u64, access: Access) -> Event {
        Event {
            actor,
            kind: OpKind::Access,
            fp: FpSet::one(ObjId::new(Class(1), obj), access),
        }
    }

    fn lock(actor: u8, kind: OpKind) -> Event {
        let l = match kind {
            OpKind::Lock(l, _) | OpKind::Unlock(l) | OpKind::TryLock(l) => l,
            _ => unreachable!(),
        };
        Event {
            actor,
            kind,
            fp: FpSet::one(l.0, Access::Write),
        }
    }

    #[test]
    fn a_release_acquire_race_is_reported_between_the_acquisitions() {
        let l = world::LockId(ObjId::new(Class(0), 7));
        let x = world::LockMode::Exclusive;
        let es = [
            lock(0, OpKind::Lock(l, x)),
            ev(0, 1, Access::Write),
            lock(0, OpKind::Unlock(l)),
            lock(1, OpKind::Lock(l, x)),
        ];
        let mut hb = Hb::default();
        let mut races = Vec::new();
        hb.analyze(&es, 2, 0, &mut races);
        assert_eq!(races, vec![(0, 3)]);
    }

    #[test]
    fn incremental_analysis_matches_a_fresh_one() {
        let a = [
            ev(0, 1, Access::Write),
            ev(1, 2, Access::Read),
            ev(1, 1, Access::Read),
            ev(2, 2, Access::Write),
            ev(0, 2, Access::Read),
        ];
        let mut b = a;
        b[3] = ev(0, 1, Access::Write);
        b[4] = ev(2, 2, Access::Write);
        let mut inc = Hb::default();
        let mut r1 = Vec::new();
        inc.analyze_from(&a, |e| e, 3, 0, 0, &mut r1);
        let mut r2 = Vec::new();
        inc.analyze_from(&b, |e| e, 3, 3, 3, &mut r2);
        let mut fresh = Hb::default();
        let mut r3 = Vec::new();
        fresh.analyze(&b, 3, 3, &mut r3);
        assert_eq!(r2, r3);
        for i in 0..b.len() {
            for j in 0..b.len() {
                assert_eq!(inc.before(i, j), fresh.before(i, j), "{i} {j}");
            }
        }
    }

    #[test]
    fn chained_writes_race_only_with_their_predecessor() {
        let es = [
            ev(0, 1, Access::Write),
            ev(1, 1, Access::Write),
            ev(2, 1, Access::Write),
        ];
        let mut hb = Hb::default();
        let mut races = Vec::new();
        hb.analyze(&es, 3, 0, &mut races);
        assert_eq!(races, vec![(0, 1), (1, 2)]);
        assert!(hb.before(0, 2));
        assert_eq!(hb.cone(2), vec![0, 1, 2]);
    }

    #[test]
    fn reads_commute_and_a_write_races_with_every_read_since() {
        let es = [
            ev(0, 1, Access::Read),
            ev(1, 1, Access::Read),
            ev(2, 1, Access::Write),
            ev(0, 2, Access::Write),
        ];
        let mut hb = Hb::default();
        let mut races = Vec::new();
        hb.analyze(&es, 3, 0, &mut races);
        assert_eq!(races, vec![(0, 2), (1, 2)]);
        assert!(!hb.before(0, 1));
        assert_eq!(hb.cone(3), vec![0, 3]);
    }

    #[test]
    fn initials_skip_steps_after_the_first_racer() {
        // 0:A w x, 1:B w y, 2:C r y (after B), 3:B w x (races with 0)
        let es = [
            ev(0, 1, Access::Write),
            ev(1, 2, Access::Write),
            ev(2, 2, Access::Read),
            ev(1, 1, Access::Write),
        ];
        let mut hb = Hb::default();
        let mut races = Vec::new();
        hb.analyze(&es, 3, 0, &mut races);
        assert!(races.contains(&(0, 3)));
        // v = [1:B, 2:C, 3:B]: B is initial, C depends on B.
        assert_eq!(hb.initials(0, 3), 0b010);
    }
}
