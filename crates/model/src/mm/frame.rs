//! Physical memory: the frame table (`struct page` array), refcounts, the page allocator, and
//! device (MMIO) memory that has no `struct page`.
//!
//! RAM frames are `0..nr_ram` (`pfn_valid`); device BARs live at [`IO_BASE`] and above and are
//! not `pfn_valid`, exactly the distinction `kvm_is_reserved_pfn` keyed on. Freed frames go to
//! the front of a LIFO free list so the next allocation reuses them: a page freed while KVM
//! still maps it is immediately observable as belonging to someone else.
//!
//! Footprint objects: `page <pfn>` is a frame's `struct page` (owner, flags, compound shape,
//! generation), `refcount <pfn>` its reference count, `data <pfn>` its contents (RAM or
//! device memory), and `page allocator` the free list. Taking or dropping a reference reads
//! the count (to free the page at zero, to flag a get on a zero count): a write of the
//! refcount, never a commutative update — whether a put frees depends on the order. Allocation and refcount steps declare the frames they will touch through
//! providers evaluated when the step is scheduled, since which frame the next allocation
//! returns, or whether a put frees, depends on the state at that moment.

use super::content::Content;
use super::types::{Pfn, PAGE_SIZE};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use world::{audit, Access, Class, Cx, FpSet, ObjId, ProviderId, World};

/// First pfn of device (MMIO) memory: 1 TiB, well above any modelled RAM.
pub const IO_BASE: u64 = 1 << 28;

/// Who a frame belongs to right now.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The shared zero page.
    ZeroPage,
    /// Private anonymous memory of the VMM process.
    Anon,
    /// Page cache of a file, memfd or shmem object.
    PageCache(Rc<str>),
    /// A driver's buffer (vGPU BAR backing, TTM buffer object, usbfs coherent buffer, ...).
    Driver(Rc<str>),
    /// A kernel data page (vDSO data).
    Kernel(Rc<str>),
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
    /// Kernel data whose real contents the model does not know (the vDSO pages): only these
    /// byte ranges `[start, end)` hold the kernel's values; `None`: every byte is modelled.
    pub known: Option<&'static [(u64, u64)]>,
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

/// The frames and the free list, shared with the footprint providers.
///
/// Frames are materialised on first use: the allocator hands out the most recently freed
/// frame, else the lowest frame never used — exactly the order of a LIFO free list that
/// starts out holding every frame in ascending order — so a world costs nothing per frame
/// until its frames are touched.
struct Table {
    nr_ram: u64,
    /// Frames `0..len`; the rest are free and untouched.
    frames: RefCell<Vec<Frame>>,
    /// Freed frames, most recent last.
    free: RefCell<Vec<Pfn>>,
    /// Every frame from here up is free and was never allocated, or was taken by a
    /// high-order allocation that skipped ahead (and is owned).
    next_fresh: Cell<u64>,
    io: RefCell<IoMem>,
}

const UNUSED: Frame = Frame {
    owner: None,
    refcount: 0,
    reserved: false,
    shape: Shape::Single,
    content: Content::ZERO,
    generation: 0,
    known: None,
};

impl Table {
    /// Look at frame `pfn` (an untouched frame reads as free); `None` if not `pfn_valid`.
    fn get<R>(&self, pfn: Pfn, f: impl FnOnce(&Frame) -> R) -> Option<R> {
        if pfn.0 >= self.nr_ram {
            return None;
        }
        Some(match self.frames.borrow().get(pfn.0 as usize) {
            Some(x) => f(x),
            None => f(&UNUSED),
        })
    }

    /// Change frame `pfn` (which must be `pfn_valid`), materialising it.
    fn get_mut<R>(&self, pfn: Pfn, f: impl FnOnce(&mut Frame) -> R) -> R {
        let mut frames = self.frames.borrow_mut();
        let i = pfn.0 as usize;
        if frames.len() <= i {
            assert!(pfn.0 < self.nr_ram, "{pfn} is not RAM");
            frames.resize(i + 1, UNUSED);
        }
        f(&mut frames[i])
    }

    fn is_unowned(&self, pfn: Pfn) -> bool {
        self.get(pfn, |f| f.owner.is_none()).unwrap_or(false)
    }

    /// Which frame carries the refcount of `pfn` (the head, for compound tails).
    fn ref_target(&self, pfn: Pfn) -> Pfn {
        match self.get(pfn, |f| f.shape) {
            Some(Shape::CompoundTail { head }) => head,
            _ => pfn,
        }
    }

    fn order_of(&self, pfn: Pfn) -> u8 {
        match self.get(pfn, |f| f.shape) {
            Some(Shape::CompoundHead { order }) => order,
            _ => 0,
        }
    }

    /// The head frame the next `alloc(order)` would return.
    fn peek_alloc(&self, order: u8) -> Option<Pfn> {
        let n = 1u64 << order;
        if n == 1 {
            if let Some(p) = self.free.borrow().last() {
                return Some(*p);
            }
            return (self.next_fresh.get()..self.nr_ram)
                .map(Pfn)
                .find(|p| self.is_unowned(*p));
        }
        // Lowest naturally aligned run of free frames.
        (n..self.nr_ram)
            .step_by(n as usize)
            .map(Pfn)
            .find(|p| (p.0..p.0 + n).all(|q| q < self.nr_ram && self.is_unowned(Pfn(q))))
    }

    /// Whether a `put_page(pfn)` now would free frames: the `(head, order)` it frees.
    fn put_frees(&self, pfn: Pfn) -> Option<(Pfn, u8)> {
        let t = self.ref_target(pfn);
        self.get(t, |x| x.owner.is_some() && x.refcount == 1 && !x.reserved)?
            .then(|| (t, self.order_of(t)))
    }
}

/// What a refcount step does, for its footprint provider.
#[derive(Copy, Clone, PartialEq, Eq)]
enum RefOp {
    Get = 0,
    Put = 1,
    GetUnlessZero = 2,
}

impl RefOp {
    fn from_bits(b: u64) -> RefOp {
        match b & 3 {
            0 => RefOp::Get,
            1 => RefOp::Put,
            _ => RefOp::GetUnlessZero,
        }
    }

    /// How a step of this kind touches the refcount, given the count before it: a
    /// `get_page_unless_zero` that finds zero only reads; everything else reads and writes.
    fn access(self, count: i64) -> Access {
        match self {
            RefOp::GetUnlessZero if count == 0 => Access::Read,
            _ => Access::Write,
        }
    }
}

/// The frame table plus device memory.
pub struct Frames {
    table: Rc<Table>,
    anomalies: RefCell<Vec<RefAnomaly>>,
    /// `page <pfn>`: a frame's `struct page`.
    page: Class,
    /// `data <pfn>`: a frame's contents (RAM or device memory).
    data: Class,
    /// `refcount <pfn>`: a frame's reference count.
    refc: Class,
    /// The allocator's free list: which pfn the next allocation returns depends on the order
    /// of allocations and frees.
    alloc_obj: ObjId,
    alloc_fp: ProviderId,
    ref_fp: ProviderId,
    /// Some frame has `known` ranges (kernel data): only then does a guest load look them up.
    any_known: std::cell::Cell<bool>,
}

impl Frames {
    /// `nr_ram` frames of RAM; frame 0 is the zero page (reserved), the rest are free.
    pub fn new(world: &mut World, nr_ram: u64) -> Self {
        let zero = Frame {
            owner: Some(Owner::ZeroPage),
            reserved: true,
            refcount: 1,
            ..UNUSED
        };
        let table = Rc::new(Table {
            nr_ram: nr_ram.max(1),
            frames: RefCell::new(vec![zero]),
            free: RefCell::new(Vec::new()),
            next_fresh: Cell::new(1),
            io: RefCell::new(IoMem::default()),
        });
        let page = world.class("page");
        let data = world.class("data");
        let refc = world.class("refcount");
        let alloc_obj = world.object("page allocator");
        let t = table.clone();
        // The free list decides which frames the next allocation takes (and a high-order
        // allocation scans owners, which only alloc/free change: both write `alloc_obj`).
        let alloc_fp = world.provider(Box::new(move |order, fp| {
            fp.push(alloc_obj, Access::Write);
            if let Some(h) = t.peek_alloc(order as u8) {
                let n = 1u64 << order;
                fp.add(page.range(h.0, h.0 + n, Access::Write));
                fp.add(refc.range(h.0, h.0 + n, Access::Write));
                fp.add(data.range(h.0, h.0 + n, Access::Write));
            }
        }));
        let t = table.clone();
        let ref_fp = world.provider(Box::new(move |arg, fp| {
            // Every object the provider reads is in the footprint, so another actor can only
            // change the answer with a step that conflicts with this one.
            let (pfn, op) = (Pfn(arg >> 2), RefOp::from_bits(arg));
            let target = t.ref_target(pfn);
            fp.push(page.obj(pfn.0), Access::Read);
            fp.push(page.obj(target.0), Access::Read);
            let count = t.get(target, |f| f.refcount).unwrap_or(0);
            fp.push(refc.obj(target.0), op.access(count));
            if op == RefOp::Put {
                if let Some((h, order)) = t.put_frees(pfn) {
                    fp.push(alloc_obj, Access::Write);
                    fp.add(page.range(h.0, h.0 + (1 << order), Access::Write));
                    fp.add(refc.range(h.0, h.0 + (1 << order), Access::Write));
                }
            }
        }));
        Frames {
            table,
            anomalies: RefCell::new(Vec::new()),
            page,
            data,
            refc,
            alloc_obj,
            alloc_fp,
            ref_fp,
            any_known: std::cell::Cell::new(false),
        }
    }

    /// Footprint object of a frame's `struct page` (refcount, owner, flags).
    pub fn obj(&self, pfn: Pfn) -> ObjId {
        self.page.obj(pfn.0)
    }

    /// Footprint object of a frame's contents.
    pub fn data_obj(&self, pfn: Pfn) -> ObjId {
        self.data.obj(pfn.0)
    }

    /// Footprint object of a frame's reference count.
    pub fn ref_obj(&self, pfn: Pfn) -> ObjId {
        self.refc.obj(pfn.0)
    }

    /// The class of `page <pfn>` objects.
    pub fn page_class(&self) -> Class {
        self.page
    }

    /// The class of `data <pfn>` objects.
    pub fn data_class(&self) -> Class {
        self.data
    }

    /// Footprint object of the allocator's free list.
    pub fn alloc_obj(&self) -> ObjId {
        self.alloc_obj
    }

    /// [`Frames::alloc`] from an actor: one step on the allocator and the frames it hands
    /// out (and zeroes).
    pub async fn alloc_pages(
        &self,
        cx: &Cx,
        order: u8,
        owner: Owner,
        compound: bool,
    ) -> Option<Pfn> {
        self.alloc_step(cx, FpSet::new(), order, "alloc_pages")
            .await;
        self.alloc(order, owner, compound)
    }

    /// [`Frames::alloc_pages`] (order 0, not compound) in a step that also touches `also`
    /// (the page a copy-on-write reads from).
    pub async fn alloc_pages_with(
        &self,
        cx: &Cx,
        also: FpSet,
        order: u8,
        owner: Owner,
    ) -> Option<Pfn> {
        self.alloc_step(cx, also, order, "alloc_pages").await;
        self.alloc(order, owner, false)
    }

    /// What an allocation of `2^order` frames now would touch (for providers of steps that
    /// may allocate).
    pub fn alloc_footprint(&self, order: u8, fp: &mut FpSet) {
        fp.push(self.alloc_obj, Access::Write);
        if let Some(h) = self.table.peek_alloc(order) {
            let n = 1u64 << order;
            fp.add(self.page.range(h.0, h.0 + n, Access::Write));
            fp.add(self.refc.range(h.0, h.0 + n, Access::Write));
            fp.add(self.data.range(h.0, h.0 + n, Access::Write));
        }
    }

    /// A step that may allocate `2^order` frames, touching `also` too.
    pub async fn alloc_step(&self, cx: &Cx, also: FpSet, order: u8, what: &'static str) {
        cx.step_dyn(also, self.alloc_fp, u64::from(order), what)
            .await
    }

    /// `pfn_valid()`: the pfn has a `struct page`.
    pub fn pfn_valid(&self, pfn: Pfn) -> bool {
        pfn.0 < self.table.nr_ram
    }

    /// The shared zero page.
    pub fn zero_pfn(&self) -> Pfn {
        Pfn(0)
    }

    fn meta<R>(&self, pfn: Pfn, f: impl FnOnce(&Frame) -> R) -> Option<R> {
        let r = self.table.get(pfn, f)?;
        audit::read(self.obj(pfn));
        Some(r)
    }

    /// Snapshot of a frame's `struct page` and contents.
    pub fn frame(&self, pfn: Pfn) -> Option<Frame> {
        let f = self.meta(pfn, Frame::clone)?;
        audit::read(self.data_obj(pfn));
        Some(f)
    }

    pub fn owner(&self, pfn: Pfn) -> Option<Owner> {
        self.meta(pfn, |f| f.owner.clone()).flatten()
    }

    /// `PageReserved(page)`.
    pub fn reserved(&self, pfn: Pfn) -> bool {
        self.meta(pfn, |f| f.reserved).unwrap_or(false)
    }

    pub fn generation(&self, pfn: Pfn) -> u32 {
        self.meta(pfn, |f| f.generation).unwrap_or(0)
    }

    pub fn is_free(&self, pfn: Pfn) -> bool {
        self.meta(pfn, |f| f.owner.is_none()).unwrap_or(false)
    }

    pub fn anomalies(&self) -> Vec<RefAnomaly> {
        self.anomalies.borrow().clone()
    }

    /// How many anomalies have been recorded so far.
    pub fn anomaly_count(&self) -> usize {
        self.anomalies.borrow().len()
    }

    /// The anomalies from the `from`-th on.
    pub fn anomalies_from(&self, from: usize) -> Vec<RefAnomaly> {
        self.anomalies
            .borrow()
            .get(from..)
            .map_or_else(Vec::new, <[_]>::to_vec)
    }

    /// Oracle bookkeeping: not model state, never read by actors.
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
    /// Returns `None` when memory is exhausted (the model's `-ENOMEM`). From an actor, only
    /// inside a step declared by [`Frames::alloc_step`].
    pub fn alloc(&self, order: u8, owner: Owner, compound: bool) -> Option<Pfn> {
        let n = 1u64 << order;
        audit::write(self.alloc_obj);
        let head = self.table.peek_alloc(order)?;
        let mut free = self.table.free.borrow_mut();
        if n == 1 && free.last() == Some(&head) {
            free.pop();
        } else {
            free.retain(|p| p.0 < head.0 || p.0 >= head.0 + n);
        }
        drop(free);
        if n == 1 && head.0 >= self.table.next_fresh.get() {
            self.table.next_fresh.set(head.0 + 1);
        }
        for i in 0..n {
            audit::write(self.obj(Pfn(head.0 + i)));
            audit::write(self.ref_obj(Pfn(head.0 + i)));
            audit::write(self.data_obj(Pfn(head.0 + i)));
            self.table.get_mut(Pfn(head.0 + i), |f| {
                f.owner = Some(owner.clone());
                f.reserved = false;
                f.content = Content::ZERO;
                f.known = None;
                f.generation += 1;
                f.refcount = i64::from(i == 0);
                f.shape = match (i, compound, order) {
                    (0, _, 0) => Shape::Single,
                    (0, true, _) => Shape::CompoundHead { order },
                    (0, false, _) => Shape::Single,
                    (_, true, _) => Shape::CompoundTail { head },
                    (_, false, _) => Shape::HighOrderTail { head },
                };
            });
        }
        Some(head)
    }

    /// Return a frame to the allocator (`__free_pages` / `free_unref_page`).
    fn free_frame(&self, pfn: Pfn) {
        audit::write(self.obj(pfn));
        audit::write(self.ref_obj(pfn));
        audit::write(self.alloc_obj);
        self.table.get_mut(pfn, |f| {
            f.owner = None;
            f.refcount = 0;
            f.shape = Shape::Single;
        });
        self.table.free.borrow_mut().push(pfn);
    }

    /// `__free_pages(page, order)` of a non-compound allocation by its owner: drop the head
    /// reference and free every frame whose count is then zero (tails always are, unless
    /// someone wrongly took a reference on one).
    pub async fn free_pages(&self, cx: &Cx, head: Pfn, order: u8) {
        let n = 1u64 << order;
        let mut fp = FpSet::one(self.alloc_obj, Access::Write);
        fp.add(self.page.range(head.0, head.0 + n, Access::Write));
        fp.add(self.refc.range(head.0, head.0 + n, Access::Write));
        cx.step_with(fp, "__free_pages").await;
        self.put_page_now(cx, head);
        for i in 1..n {
            let p = Pfn(head.0 + i);
            audit::read(self.ref_obj(p));
            let (free, rc) = self
                .meta(p, |f| (f.owner.is_some() && f.refcount == 0, f.refcount))
                .expect("pfn_valid");
            if free {
                self.free_frame(p);
            } else if rc > 0 {
                world::emit!(cx, "{p} not freed: refcount {rc}");
            }
        }
    }

    fn ref_target(&self, pfn: Pfn) -> Pfn {
        audit::read(self.obj(pfn));
        self.table.ref_target(pfn)
    }

    /// `get_page()`: an unconditional increment (an atomic: one scheduling point). With
    /// `CONFIG_DEBUG_VM` a get on a zero count is `VM_BUG_ON_PAGE`; the model records it.
    pub async fn get_page(&self, cx: &Cx, pfn: Pfn) {
        self.ref_step(cx, pfn, RefOp::Get, "page_ref_inc").await;
        self.get_page_now(cx, pfn);
    }

    async fn ref_step(&self, cx: &Cx, pfn: Pfn, op: RefOp, what: &'static str) {
        cx.step_dyn(FpSet::new(), self.ref_fp, (pfn.0 << 2) | op as u64, what)
            .await
    }

    /// Record the refcount access a `op` on `t` makes, given the count before it.
    fn touch_ref(&self, t: Pfn, op: RefOp, count: i64) {
        audit::read(self.obj(t));
        audit::touch(self.ref_obj(t), op.access(count));
    }

    fn get_page_now(&self, cx: &Cx, pfn: Pfn) {
        let t = self.ref_target(pfn);
        let (before, free) = self.table.get_mut(t, |f| {
            f.refcount += 1;
            (f.refcount - 1, f.owner.is_none())
        });
        self.touch_ref(t, RefOp::Get, before);
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
        self.ref_step(cx, pfn, RefOp::GetUnlessZero, "page_ref_add_unless")
            .await;
        let t = self.ref_target(pfn);
        let before = self.table.get(t, |f| f.refcount).unwrap_or(0);
        self.touch_ref(t, RefOp::GetUnlessZero, before);
        let rc = self.table.get_mut(t, |f| {
            if f.refcount != 0 {
                f.refcount += 1;
            }
            f.refcount
        });
        if rc == 0 {
            world::emit!(cx, "get_page_unless_zero({pfn}): refcount 0, no reference");
            return false;
        }
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
        self.ref_step(cx, pfn, RefOp::Put, "put_page_testzero")
            .await;
        self.put_page_now(cx, pfn);
    }

    /// `put_page` without a scheduling point of its own, for setup and for
    /// [`Frames::free_pages`] (whose step already declared the refcount and the free list).
    pub(crate) fn put_page_now(&self, cx: &Cx, pfn: Pfn) {
        let t = self.ref_target(pfn);
        let (after, reserved, was_free) = self.table.get_mut(t, |f| {
            f.refcount -= 1;
            (f.refcount, f.reserved, f.owner.is_none())
        });
        self.touch_ref(t, RefOp::Put, after + 1);
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
            let order = self.table.order_of(t);
            world::emit!(cx, "{t} freed (order {order})");
            for i in 0..(1u64 << order) {
                self.free_frame(Pfn(t.0 + i));
            }
        }
    }

    /// A reference taken during setup, before any actor runs (a mapping made by the host
    /// before the scenario starts).
    pub fn get_page_setup(&self, pfn: Pfn) {
        let t = self.table.ref_target(pfn);
        self.table.get_mut(t, |f| f.refcount += 1);
    }

    /// Mark frames `PageReserved` (driver-owned memory set up with `SetPageReserved`).
    /// Marks a frame as kernel data the model knows only in `ranges` (byte `[start, end)`);
    /// its other bytes hold a placeholder, which guest loads report as unknown.
    pub fn set_known(&self, pfn: Pfn, ranges: &'static [(u64, u64)]) {
        audit::write(self.obj(pfn));
        self.any_known.set(true);
        self.table.get_mut(pfn, |f| f.known = Some(ranges));
    }

    /// Whether bytes `off..off + size` of `pfn` hold the kernel's real values in the model.
    /// Not a shared access: `known` is set while the world is built and never changes while
    /// actors run (only kernel data pages have it, and they are never freed).
    pub fn known(&self, pfn: Pfn, off: u64, size: u8) -> bool {
        // Every guest load asks: skip the table lookup in the worlds without kernel data.
        if !self.any_known.get() {
            return true;
        }
        let end = off + u64::from(size);
        match self.table.get(pfn, |f| f.known).flatten() {
            None => true,
            Some(r) => r.iter().any(|&(a, b)| a <= off && end <= b),
        }
    }

    pub fn set_reserved(&self, pfn: Pfn, reserved: bool) {
        audit::write(self.obj(pfn));
        self.table.get_mut(pfn, |f| f.reserved = reserved);
    }

    pub fn refcount(&self, pfn: Pfn) -> i64 {
        let t = self.ref_target(pfn);
        audit::read(self.ref_obj(t));
        self.table.get(t, |f| f.refcount).unwrap_or(0)
    }

    /// Register `n` frames of device memory at `base` (a BAR), filled with `pattern`.
    pub fn add_io(&self, base: Pfn, n: u64, pattern: u32) {
        self.table.io.borrow_mut().add(base.0, n, pattern);
    }

    /// Whether `pfn` is registered device memory.
    pub fn is_io(&self, pfn: Pfn) -> bool {
        self.table.io.borrow().get(pfn.0).is_some()
    }

    /// Load from a frame (RAM or device memory). `None` for a pfn that is neither: the
    /// model's "machine check" on a physical address with nothing behind it.
    pub fn read(&self, pfn: Pfn, off: u64, size: u8) -> Option<u64> {
        audit::read(self.data_obj(pfn));
        if let Some(v) = self.table.get(pfn, |f| f.content.read(off, size)) {
            return Some(v);
        }
        self.table.io.borrow().get(pfn.0).map(|c| c.read(off, size))
    }

    /// Store to a frame (RAM or device memory); false if nothing is there.
    pub fn write(&self, pfn: Pfn, off: u64, size: u8, value: u64) -> bool {
        audit::write(self.data_obj(pfn));
        if self.pfn_valid(pfn) {
            self.table
                .get_mut(pfn, |f| f.content.write(off, size, value));
            return true;
        }
        match self.table.io.borrow_mut().get_mut(pfn.0) {
            Some(c) => {
                c.write(off, size, value);
                true
            }
            None => false,
        }
    }

    /// Fill a whole frame with a pattern (a driver or the host initialising a page).
    pub fn fill(&self, pfn: Pfn, pattern: u32) {
        audit::write(self.data_obj(pfn));
        if self.pfn_valid(pfn) {
            self.table
                .get_mut(pfn, |f| f.content = Content::filled(pattern));
        } else if let Some(c) = self.table.io.borrow_mut().get_mut(pfn.0) {
            *c = Content::filled(pattern);
        }
    }

    /// A frame's contents (a saved copy, for swap-out).
    pub fn content(&self, pfn: Pfn) -> Content {
        audit::read(self.data_obj(pfn));
        if let Some(c) = self.table.get(pfn, |f| f.content.clone()) {
            return c;
        }
        self.table
            .io
            .borrow()
            .get(pfn.0)
            .cloned()
            .unwrap_or(Content::filled(0))
    }

    /// Copy a page's contents (COW, `UFFDIO_COPY`).
    pub fn copy(&self, from: Pfn, to: Pfn) {
        let c = self.content(from);
        if self.pfn_valid(to) {
            audit::write(self.data_obj(to));
            self.table.get_mut(to, |f| f.content = c);
        }
    }

    /// Number of RAM frames.
    pub fn nr_ram(&self) -> u64 {
        self.table.nr_ram
    }

    pub fn page_bytes(&self) -> u64 {
        PAGE_SIZE
    }

    /// A digest of every frame's owner, refcount, generation and contents (for comparing the
    /// end states of two executions).
    pub fn digest(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        for (pfn, f) in self.table.frames.borrow().iter().enumerate() {
            // Untouched frames and free frames' old contents are unobservable.
            if f.owner.is_none() && f.generation == 0 {
                continue;
            }
            pfn.hash(h);
            f.owner.hash(h);
            f.refcount.hash(h);
            f.generation.hash(h);
            if f.owner.is_some() {
                f.content.hash(h);
            }
        }
        for (start, run) in &self.table.io.borrow().0 {
            start.hash(h);
            run.hash(h);
        }
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
