//! Physical memory: the frame table (`struct page` array), refcounts, the page allocator, and
//! device (MMIO) memory that has no `struct page`.
//!
//! RAM frames are `0..nr_ram` (`pfn_valid`); device BARs live at [`IO_BASE`] and above and are
//! not `pfn_valid`, exactly the distinction `kvm_is_reserved_pfn` keyed on. Freed frames go to
//! the front of a LIFO free list so the next allocation reuses them: a page freed while KVM
//! still maps it is immediately observable as belonging to someone else.

use super::content::Content;
use super::types::{Pfn, PAGE_SIZE};
use std::cell::RefCell;
use std::fmt;
use world::{Access, Cx, ObjId, World};

/// First pfn of device (MMIO) memory: 1 TiB, well above any modelled RAM.
pub const IO_BASE: u64 = 1 << 28;

/// Who a frame belongs to right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The shared zero page.
    ZeroPage,
    /// Private anonymous memory of the VMM process.
    Anon,
    /// Page cache of a file, memfd or shmem object.
    PageCache(String),
    /// A driver's buffer (vGPU BAR backing, TTM buffer object, usbfs coherent buffer, ...).
    Driver(String),
    /// A kernel data page (vDSO data).
    Kernel(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::ZeroPage => f.write_str("zero page"),
            Owner::Anon => f.write_str("anon"),
            Owner::PageCache(n) => write!(f, "page cache of {n}"),
            Owner::Driver(n) => write!(f, "driver {n}"),
            Owner::Kernel(n) => write!(f, "kernel {n}"),
        }
    }
}

/// Compound-page structure of a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An order-0 page.
    Single,
    /// Head of a compound high-order page: carries the refcount for the whole folio.
    CompoundHead { order: u8 },
    /// Tail of a compound page: refcount operations go to the head.
    CompoundTail { head: Pfn },
    /// Tail of a *non-compound* high-order allocation (`alloc_pages(order)` without
    /// `__GFP_COMP`, as TTM and `dma_alloc_coherent` do): its own refcount is 0 and nobody
    /// expects it to be touched.
    HighOrderTail { head: Pfn },
}

/// `struct page`, reduced to what this path needs.
#[derive(Clone, Debug)]
pub struct Frame {
    /// `None` while on the free list.
    pub owner: Option<Owner>,
    pub refcount: i64,
    pub reserved: bool,
    pub shape: Shape,
    pub content: Content,
    /// Bumped at every allocation, so holders can tell a reused frame from the one they got.
    pub generation: u32,
}

/// A refcount misuse, recorded instead of crashing so oracles can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefAnomaly {
    pub pfn: Pfn,
    pub what: String,
    pub actor: String,
}

/// Device memory: runs of consecutive pfns, sorted by first pfn and never overlapping. A BAR
/// is registered as one run, so finding a page is a binary search among a handful of runs
/// rather than a search among every registered page (guest accesses to BARs read through
/// here on every SPTE hit).
#[derive(Default)]
struct IoMem(Vec<(u64, Vec<Content>)>);

impl IoMem {
    /// Index of the run that would hold `pfn`: the last one starting at or before it.
    fn run_of(&self, pfn: u64) -> Option<usize> {
        self.0
            .partition_point(|(start, _)| *start <= pfn)
            .checked_sub(1)
    }

    fn get(&self, pfn: u64) -> Option<&Content> {
        let (start, run) = &self.0[self.run_of(pfn)?];
        run.get((pfn - start) as usize)
    }

    fn get_mut(&mut self, pfn: u64) -> Option<&mut Content> {
        let i = self.run_of(pfn)?;
        let (start, run) = &mut self.0[i];
        run.get_mut((pfn - *start) as usize)
    }

    /// Register `n` pages from `base` filled with `pattern`. Pages that are already
    /// registered are refilled in place (registration is per page); the rest become new
    /// runs.
    fn add(&mut self, base: u64, n: u64, pattern: u32) {
        let mut run_start = base;
        let mut run = Vec::new();
        for pfn in base..base + n {
            if let Some(c) = self.get_mut(pfn) {
                *c = Content::filled(pattern);
                self.insert_run(run_start, std::mem::take(&mut run));
                continue;
            }
            if run.is_empty() {
                run_start = pfn;
            }
            run.push(Content::filled(pattern));
        }
        self.insert_run(run_start, run);
    }

    /// Insert a run of pages none of which is registered yet.
    fn insert_run(&mut self, start: u64, run: Vec<Content>) {
        if !run.is_empty() {
            let i = self.0.partition_point(|(s, _)| *s < start);
            self.0.insert(i, (start, run));
        }
    }
}

/// The frame table plus device memory.
pub struct Frames {
    frames: RefCell<Vec<Frame>>,
    objs: Vec<ObjId>,
    free: RefCell<Vec<Pfn>>,
    io: RefCell<IoMem>,
    anomalies: RefCell<Vec<RefAnomaly>>,
    io_obj: ObjId,
    /// Footprint of page *contents* (all frames): loads and stores by guests, host threads,
    /// devices and kernel mappings.
    mem_obj: ObjId,
    /// Footprint of the allocator's free list: which pfn the next allocation returns
    /// depends on the order of allocations and frees.
    alloc_obj: ObjId,
}

impl Frames {
    /// `nr_ram` frames of RAM; frame 0 is the zero page (reserved), the rest are free.
    pub fn new(world: &mut World, nr_ram: u64) -> Self {
        let mut frames = Vec::new();
        let mut objs = Vec::new();
        for pfn in 0..nr_ram {
            objs.push(world.object(format!("page {pfn:#x}")));
            frames.push(Frame {
                owner: None,
                refcount: 0,
                reserved: false,
                shape: Shape::Single,
                content: Content::filled(0),
                generation: 0,
            });
        }
        frames[0].owner = Some(Owner::ZeroPage);
        frames[0].reserved = true;
        frames[0].refcount = 1;
        // LIFO: pop() hands out low pfns first.
        let free = (1..nr_ram).rev().map(Pfn).collect();
        Frames {
            frames: RefCell::new(frames),
            objs,
            free: RefCell::new(free),
            io: RefCell::new(IoMem::default()),
            anomalies: RefCell::new(Vec::new()),
            io_obj: world.object("device memory"),
            mem_obj: world.object("page contents"),
            alloc_obj: world.object("page allocator"),
        }
    }

    /// Footprint object of page contents (see the field).
    pub fn mem_obj(&self) -> ObjId {
        self.mem_obj
    }

    /// Footprint object of the allocator's free list.
    pub fn alloc_obj(&self) -> ObjId {
        self.alloc_obj
    }

    /// [`Frames::alloc`] from an actor: a step on the allocator.
    pub async fn alloc_pages(
        &self,
        cx: &Cx,
        order: u8,
        owner: Owner,
        compound: bool,
    ) -> Option<Pfn> {
        cx.access(self.alloc_obj, Access::Write, "alloc_pages")
            .await;
        self.alloc(order, owner, compound)
    }

    /// `pfn_valid()`: the pfn has a `struct page`.
    pub fn pfn_valid(&self, pfn: Pfn) -> bool {
        (pfn.0 as usize) < self.frames.borrow().len()
    }

    /// The shared zero page.
    pub fn zero_pfn(&self) -> Pfn {
        Pfn(0)
    }

    /// Snapshot of a frame's `struct page`.
    pub fn frame(&self, pfn: Pfn) -> Option<Frame> {
        self.frames.borrow().get(pfn.0 as usize).cloned()
    }

    pub fn owner(&self, pfn: Pfn) -> Option<Owner> {
        self.frames
            .borrow()
            .get(pfn.0 as usize)
            .and_then(|f| f.owner.clone())
    }

    pub fn generation(&self, pfn: Pfn) -> u32 {
        self.frames
            .borrow()
            .get(pfn.0 as usize)
            .map_or(0, |f| f.generation)
    }

    pub fn is_free(&self, pfn: Pfn) -> bool {
        self.frames
            .borrow()
            .get(pfn.0 as usize)
            .is_some_and(|f| f.owner.is_none())
    }

    /// Footprint object of a frame's refcount and contents.
    pub fn obj(&self, pfn: Pfn) -> ObjId {
        self.objs
            .get(pfn.0 as usize)
            .copied()
            .unwrap_or(self.io_obj)
    }

    pub fn anomalies(&self) -> Vec<RefAnomaly> {
        self.anomalies.borrow().clone()
    }

    /// The anomalies from the `from`-th on.
    pub fn anomalies_from(&self, from: usize) -> Vec<RefAnomaly> {
        self.anomalies
            .borrow()
            .get(from..)
            .map_or_else(Vec::new, <[_]>::to_vec)
    }

    fn anomaly(&self, cx: &Cx, pfn: Pfn, what: String) {
        world::emit!(cx, "refcount anomaly on {pfn}: {what}");
        self.anomalies.borrow_mut().push(RefAnomaly {
            pfn,
            what,
            actor: cx.name(),
        });
    }

    /// `alloc_pages(gfp, order)`: `2^order` contiguous free frames, zeroed, refcount 1 on
    /// the head. `compound` adds `__GFP_COMP`; without it the tails stay at refcount 0.
    /// Returns `None` when memory is exhausted (the model's `-ENOMEM`).
    pub fn alloc(&self, order: u8, owner: Owner, compound: bool) -> Option<Pfn> {
        let n = 1u64 << order;
        let head = {
            let free = self.free.borrow();
            if n == 1 {
                free.last().copied()?
            } else {
                // Lowest naturally aligned run of free frames.
                let frames = self.frames.borrow();
                let len = frames.len() as u64;
                (n..len)
                    .step_by(n as usize)
                    .map(Pfn)
                    .find(|p| (p.0..p.0 + n).all(|q| frames[q as usize].owner.is_none()))?
            }
        };
        self.free
            .borrow_mut()
            .retain(|p| p.0 < head.0 || p.0 >= head.0 + n);
        let mut frames = self.frames.borrow_mut();
        for i in 0..n {
            let f = &mut frames[(head.0 + i) as usize];
            f.owner = Some(owner.clone());
            f.reserved = false;
            f.content = Content::filled(0);
            f.generation += 1;
            f.refcount = i64::from(i == 0);
            f.shape = match (i, compound, order) {
                (0, _, 0) => Shape::Single,
                (0, true, _) => Shape::CompoundHead { order },
                (0, false, _) => Shape::Single,
                (_, true, _) => Shape::CompoundTail { head },
                (_, false, _) => Shape::HighOrderTail { head },
            };
        }
        Some(head)
    }

    /// Return a frame to the allocator (`__free_pages` / `free_unref_page`).
    fn free_frame(&self, pfn: Pfn) {
        let mut frames = self.frames.borrow_mut();
        let f = &mut frames[pfn.0 as usize];
        f.owner = None;
        f.refcount = 0;
        f.shape = Shape::Single;
        self.free.borrow_mut().push(pfn);
    }

    /// `__free_pages(page, order)` of a non-compound allocation by its owner: drop the head
    /// reference and free every frame whose count is then zero (tails always are, unless
    /// someone wrongly took a reference on one).
    pub async fn free_pages(&self, cx: &Cx, head: Pfn, order: u8) {
        cx.access2(
            (self.obj(head), Access::Write),
            (self.alloc_obj, Access::Write),
            "__free_pages",
        )
        .await;
        let n = 1u64 << order;
        self.put_page_now(cx, head);
        for i in 1..n {
            let p = Pfn(head.0 + i);
            let (free, rc) = {
                let frames = self.frames.borrow();
                let f = &frames[p.0 as usize];
                (f.owner.is_some() && f.refcount == 0, f.refcount)
            };
            if free {
                self.free_frame(p);
            } else if rc > 0 {
                world::emit!(cx, "{p} not freed: refcount {rc}");
            }
        }
    }

    /// Which frame carries the refcount of `pfn` (the head, for compound tails).
    fn ref_target(&self, pfn: Pfn) -> Pfn {
        match self.frames.borrow()[pfn.0 as usize].shape {
            Shape::CompoundTail { head } => head,
            _ => pfn,
        }
    }

    fn order_of(&self, pfn: Pfn) -> u8 {
        match self.frames.borrow()[pfn.0 as usize].shape {
            Shape::CompoundHead { order } => order,
            _ => 0,
        }
    }

    /// `get_page()`: an unconditional increment (an atomic: one scheduling point). With
    /// `CONFIG_DEBUG_VM` a get on a zero count is `VM_BUG_ON_PAGE`; the model records it.
    pub async fn get_page(&self, cx: &Cx, pfn: Pfn) {
        let t = self.ref_target(pfn);
        cx.access(self.obj(t), Access::Write, "page_ref_inc").await;
        self.get_page_now(cx, pfn);
    }

    fn get_page_now(&self, cx: &Cx, pfn: Pfn) {
        let t = self.ref_target(pfn);
        let (before, free) = {
            let mut frames = self.frames.borrow_mut();
            let f = &mut frames[t.0 as usize];
            f.refcount += 1;
            (f.refcount - 1, f.owner.is_none())
        };
        world::emit!(cx, "get_page({pfn}): refcount {before} -> {}", before + 1);
        if before <= 0 || free {
            self.anomaly(
                cx,
                pfn,
                format!(
                    "get_page on refcount {before}{}",
                    if free { " (free page)" } else { "" }
                ),
            );
        }
    }

    /// `get_page_unless_zero()`: increments unless the count is zero; false if it was.
    pub async fn get_page_unless_zero(&self, cx: &Cx, pfn: Pfn) -> bool {
        let t = self.ref_target(pfn);
        cx.access(self.obj(t), Access::Write, "page_ref_add_unless")
            .await;
        let mut frames = self.frames.borrow_mut();
        let f = &mut frames[t.0 as usize];
        if f.refcount == 0 {
            drop(frames);
            world::emit!(cx, "get_page_unless_zero({pfn}): refcount 0, no reference");
            return false;
        }
        f.refcount += 1;
        let rc = f.refcount;
        drop(frames);
        world::emit!(
            cx,
            "get_page_unless_zero({pfn}): refcount {} -> {rc}",
            rc - 1
        );
        true
    }

    /// `put_page()`: decrement, and free the page (its whole folio) when the count reaches
    /// zero. A put on a zero count is a refcount underflow, recorded as an anomaly.
    pub async fn put_page(&self, cx: &Cx, pfn: Pfn) {
        let t = self.ref_target(pfn);
        // A put that reaches zero frees the page: the step may write the free list too.
        cx.access2(
            (self.obj(t), Access::Write),
            (self.alloc_obj, Access::Write),
            "put_page_testzero",
        )
        .await;
        self.put_page_now(cx, pfn);
    }

    /// `put_page` without a scheduling point of its own, for setup and for
    /// [`Frames::free_pages`] (whose step already declared the refcount and the free list).
    pub(crate) fn put_page_now(&self, cx: &Cx, pfn: Pfn) {
        let t = self.ref_target(pfn);
        let (after, reserved, was_free) = {
            let mut frames = self.frames.borrow_mut();
            let f = &mut frames[t.0 as usize];
            f.refcount -= 1;
            (f.refcount, f.reserved, f.owner.is_none())
        };
        if was_free {
            // A reference on a page that is already on the free list (someone "got" it
            // after it was freed): freeing it again would corrupt the allocator.
            world::emit!(cx, "put_page({pfn}): refcount {} -> {after}", after + 1);
            self.anomaly(cx, pfn, "put_page on a free page (double free)".to_string());
            return;
        }
        world::emit!(cx, "put_page({pfn}): refcount {} -> {after}", after + 1);
        if after < 0 {
            self.anomaly(cx, pfn, format!("put_page below zero (refcount {after})"));
        } else if after == 0 && !reserved {
            let order = self.order_of(t);
            world::emit!(cx, "{t} freed (order {order})");
            for i in 0..(1u64 << order) {
                self.free_frame(Pfn(t.0 + i));
            }
        }
    }

    /// A reference taken during setup, before any actor runs (a mapping made by the host
    /// before the scenario starts).
    pub fn get_page_setup(&self, pfn: Pfn) {
        let t = self.ref_target(pfn);
        self.frames.borrow_mut()[t.0 as usize].refcount += 1;
    }

    /// Mark frames `PageReserved` (driver-owned memory set up with `SetPageReserved`).
    pub fn set_reserved(&self, pfn: Pfn, reserved: bool) {
        self.frames.borrow_mut()[pfn.0 as usize].reserved = reserved;
    }

    pub fn refcount(&self, pfn: Pfn) -> i64 {
        let t = self.ref_target(pfn);
        self.frames.borrow()[t.0 as usize].refcount
    }

    /// Register `n` frames of device memory at `base` (a BAR), filled with `pattern`.
    pub fn add_io(&self, base: Pfn, n: u64, pattern: u32) {
        self.io.borrow_mut().add(base.0, n, pattern);
    }

    /// Whether `pfn` is registered device memory.
    pub fn is_io(&self, pfn: Pfn) -> bool {
        self.io.borrow().get(pfn.0).is_some()
    }

    /// Load from a frame (RAM or device memory). `None` for a pfn that is neither: the
    /// model's "machine check" on a physical address with nothing behind it.
    pub fn read(&self, pfn: Pfn, off: u64, size: u8) -> Option<u64> {
        if self.pfn_valid(pfn) {
            return Some(self.frames.borrow()[pfn.0 as usize].content.read(off, size));
        }
        self.io.borrow().get(pfn.0).map(|c| c.read(off, size))
    }

    /// Store to a frame (RAM or device memory); false if nothing is there.
    pub fn write(&self, pfn: Pfn, off: u64, size: u8, value: u64) -> bool {
        if self.pfn_valid(pfn) {
            self.frames.borrow_mut()[pfn.0 as usize]
                .content
                .write(off, size, value);
            return true;
        }
        match self.io.borrow_mut().get_mut(pfn.0) {
            Some(c) => {
                c.write(off, size, value);
                true
            }
            None => false,
        }
    }

    /// Fill a whole frame with a pattern (a driver or the host initialising a page).
    pub fn fill(&self, pfn: Pfn, pattern: u32) {
        if self.pfn_valid(pfn) {
            self.frames.borrow_mut()[pfn.0 as usize].content = Content::filled(pattern);
        } else if let Some(c) = self.io.borrow_mut().get_mut(pfn.0) {
            *c = Content::filled(pattern);
        }
    }

    /// Copy a page's contents (COW, `UFFDIO_COPY`).
    pub fn copy(&self, from: Pfn, to: Pfn) {
        let c = if self.pfn_valid(from) {
            self.frames.borrow()[from.0 as usize].content.clone()
        } else {
            self.io
                .borrow()
                .get(from.0)
                .cloned()
                .unwrap_or(Content::filled(0))
        };
        if self.pfn_valid(to) {
            self.frames.borrow_mut()[to.0 as usize].content = c;
        }
    }

    /// Number of RAM frames.
    pub fn nr_ram(&self) -> u64 {
        self.frames.borrow().len() as u64
    }

    pub fn page_bytes(&self) -> u64 {
        PAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::IoMem;

    fn pattern(io: &IoMem, pfn: u64) -> Option<u64> {
        io.get(pfn).map(|c| c.read(0, 4))
    }

    /// Registering overlapping ranges behaves as registering page by page: later
    /// registrations refill the pages they cover, the rest keep their content.
    #[test]
    fn io_runs_behave_like_per_page_registration() {
        let mut io = IoMem::default();
        io.add(10, 10, 0xa);
        io.add(5, 10, 0xb); // 5..10 new, 10..15 refilled
        io.add(18, 5, 0xc); // 18..20 refilled, 20..23 new
        io.add(30, 0, 0xd); // nothing
        let want = |pfn: u64| match pfn {
            5..=14 => Some(0xb),
            15..=17 => Some(0xa),
            18..=22 => Some(0xc),
            _ => None,
        };
        for pfn in 0..40 {
            assert_eq!(pattern(&io, pfn), want(pfn), "pfn {pfn}");
        }
        io.get_mut(16).expect("registered").write(0, 4, 0xe);
        assert_eq!(pattern(&io, 16), Some(0xe));
        assert_eq!(pattern(&io, 15), Some(0xa));
        assert!(io.get_mut(23).is_none());
    }
}
