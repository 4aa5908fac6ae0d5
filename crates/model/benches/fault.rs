//! Throughput of the modelled fault paths on one core, tracing off, no oracle (the observer
//! is a no-op), so what is measured is the model code plus the `world` executor:
//!
//! * `fixup_user_fault`: round trips of `mmap_read_lock` → `fixup_user_fault` (the vfio-pci
//!   `->fault` does `vmf_insert_pfn`) → `mmap_read_unlock`, on distinct pages of a BAR, and
//!   on one page that is zapped again after every round (`zap_vma_ptes`).
//! * `guest_fault`: guest reads of distinct pages of a memslot over a vfio BAR under
//!   linux-6.13, each a stage-2 fault through `hva_to_pfn` → GUP (fails: PFNMAP) →
//!   `follow_pfnmap_start` (fails: no PTE) → `fixup_user_fault` → `vmf_insert_pfn` →
//!   `follow_pfnmap_start` → SPTE.
//! * `spte_hit`: guest reads of pages whose SPTEs are already installed.
//! * `pfnmap_fault_dynamic_slots`: `guest_fault` in a VM whose memslots may change while it
//!   runs ([`Kvm::set_dynamic_slots`]): each fault also takes the SRCU read section and the
//!   memslot lookup as steps. Its ratio to `pfnmap_fault_linux-6.13` is what a scenario with
//!   memslot steps pays per fault.
//! * `memslot/create_delete`: `KVM_SET_USER_MEMORY_REGION` create + delete pairs (swap,
//!   `synchronize_srcu`, invalidate, flush) with no vCPU running.
//!
//! Run: `cargo bench -p model --bench fault -- --measurement-time 3`
//!
//! The number after the last `/` of a benchmark's name is the work per iteration: rounds,
//! pages faulted, or guest reads. Each iteration builds a fresh world (untimed) and times one
//! `World::run`.
//!
//! Runs keep per-step records (the schedule, `StepRecord`s, vCPU access records), so the
//! longer variants also pay for first-touching fresh memory: glibc trims its heap after each
//! iteration and the next run faults it in again, which on a VM costs microseconds per 4 KiB
//! page. To see the model's CPU cost alone, pin the allocator:
//! `GLIBC_TUNABLES=glibc.malloc.trim_threshold=4000000000:glibc.malloc.mmap_threshold=4000000000`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use model::drivers::{VfioBar, VfioBarConfig};
use model::kvm::memslot_update::{kvm_set_memory_region, SlotRequest};
use model::kvm::vcpu::{GuestOp, Outcome, Sequencer, Vcpu};
use model::kvm::{Kvm, Memslot, PolicyId};
use model::mm::fault::fixup_user_fault;
use model::mm::zap::zap_vma_ptes;
use model::mm::{FaultFlags, Frames, Hva, Mm, PAGE_SIZE};
use std::hint::black_box;
use std::ops::ControlFlow;
use std::rc::Rc;
use world::{RoundRobin, Status, World};

/// Where the BAR is mapped in the VMM.
const BAR_HVA: Hva = 0x7f00_0000_0000;
/// Guest-physical base of the memslot over the BAR.
const SLOT_GFN: u64 = 0x10_0000;
/// The BAR's fill pattern: what every guest read must return.
const PATTERN: u32 = 0xba5e_0000;

/// A world with a little RAM, the VMM mm, and a vfio BAR of `pages` pages mapped at
/// [`BAR_HVA`] (no PTEs yet).
struct Host {
    w: World,
    mm: Rc<Mm>,
    bar: Rc<VfioBar>,
}

fn host(pages: u64) -> Host {
    let mut w = World::new();
    w.set_tracing(false);
    w.set_max_steps(u64::MAX);
    // The PFNMAP path never allocates RAM; only the zero page is needed.
    let frames = Rc::new(Frames::new(&mut w, 8));
    let mm = Mm::new(&mut w, frames.clone());
    let cfg = VfioBarConfig {
        pages,
        pattern: PATTERN,
        ..VfioBarConfig::default()
    };
    let bar = VfioBar::new(&mut w, &frames, &mm, cfg);
    bar.mmap(BAR_HVA).expect("mmap the BAR");
    Host { w, mm, bar }
}

fn run(w: &mut World) -> u64 {
    let r = w.run(&mut RoundRobin, &mut || ControlFlow::Continue(()));
    assert_eq!(r.status, Status::Completed);
    r.steps
}

/// One actor faulting in every page of the BAR once with `fixup_user_fault`.
fn fixup_distinct(pages: u64) -> Host {
    let mut h = host(pages);
    let mm = h.mm.clone();
    h.w.spawn("host", move |cx| async move {
        for i in 0..pages {
            let a = BAR_HVA + i * PAGE_SIZE;
            mm.mmap_read_lock(&cx).await;
            let mut unlocked = false;
            let r = fixup_user_fault(&cx, &mm, a, FaultFlags::empty(), &mut unlocked).await;
            assert!(r.is_ok() && !unlocked);
            mm.mmap_unlock(&cx).await;
        }
    });
    h
}

/// One actor faulting in page 0 `rounds` times, zapping it (`zap_vma_ptes`) after each.
fn fixup_zap(rounds: u64) -> Host {
    let mut h = host(1);
    let mm = h.mm.clone();
    h.w.spawn("host", move |cx| async move {
        let vma = mm.vma_lookup(BAR_HVA).expect("BAR vma");
        for _ in 0..rounds {
            mm.mmap_read_lock(&cx).await;
            let mut unlocked = false;
            let r = fixup_user_fault(&cx, &mm, BAR_HVA, FaultFlags::empty(), &mut unlocked).await;
            assert!(r.is_ok() && !unlocked);
            zap_vma_ptes(&cx, &vma, BAR_HVA, BAR_HVA + PAGE_SIZE).await;
            mm.mmap_unlock(&cx).await;
        }
    });
    h
}

/// A VM (linux-6.13) with one memslot over the whole BAR.
struct Vm {
    h: Host,
    kvm: Rc<Kvm>,
    seq: Rc<Sequencer>,
}

fn vm(pages: u64, vcpus: usize) -> Vm {
    let mut h = host(pages);
    let kvm = Kvm::new(&mut h.w, &h.mm, PolicyId::Linux6_13.build());
    kvm.set_memslot(Memslot {
        id: 0,
        base_gfn: SLOT_GFN,
        npages: pages,
        userspace_addr: BAR_HVA,
        readonly: false,
        ..Memslot::default()
    });
    let seq = Sequencer::new(h.w.object("vmm sequencing"), vcpus, Vec::new());
    Vm { h, kvm, seq }
}

/// Reads of pages `0..pages`, `passes` times over.
fn reads(pages: u64, passes: u64) -> Vec<GuestOp> {
    (0..passes)
        .flat_map(|_| 0..pages)
        .map(|i| GuestOp::Read {
            gpa: (SLOT_GFN + i) << 12,
            size: 4,
        })
        .collect()
}

fn spawn_vcpu(vm: &mut Vm, id: usize, program: Vec<GuestOp>) -> Rc<Vcpu> {
    let vcpu = Vcpu::new(id, &vm.kvm, program, &vm.seq);
    let v = vcpu.clone();
    vm.h.w.spawn(format!("vcpu{id}"), move |cx| v.run(cx));
    vcpu
}

/// Every access completed with the BAR's content on its first attempt.
fn check(vcpu: &Vcpu) {
    for r in vcpu.records.borrow().iter() {
        assert_eq!(
            r.attempts,
            [Outcome::Value(u64::from(PATTERN))],
            "{:?}",
            r.op
        );
    }
}

/// vCPU 0 reads every page once: each read is a stage-2 fault through the PFNMAP path.
fn guest_faults(pages: u64) -> (Vm, Rc<Vcpu>) {
    let mut vm = vm(pages, 1);
    let v = spawn_vcpu(&mut vm, 0, reads(pages, 1));
    (vm, v)
}

/// [`guest_faults`] with memslot changes possible (none happens).
fn guest_faults_dynamic(pages: u64) -> (Vm, Rc<Vcpu>) {
    let mut vm = vm(pages, 1);
    vm.kvm.set_dynamic_slots(true);
    let v = spawn_vcpu(&mut vm, 0, reads(pages, 1));
    (vm, v)
}

/// A VMM thread creating and deleting slot 1 `pairs` times.
fn slot_churn(pairs: u64) -> Vm {
    let mut vm = vm(1, 0);
    vm.kvm.set_dynamic_slots(true);
    let kvm = vm.kvm.clone();
    vm.h.w.spawn("vmm", move |cx| async move {
        let mut req = SlotRequest {
            id: 1,
            base_gfn: 0x10,
            npages: 1,
            userspace_addr: BAR_HVA,
            readonly: false,
        };
        for _ in 0..pairs {
            req.npages = 1;
            kvm_set_memory_region(&cx, &kvm, &req)
                .await
                .expect("create");
            req.npages = 0;
            kvm_set_memory_region(&cx, &kvm, &req)
                .await
                .expect("delete");
        }
    });
    vm
}

/// vCPU 0 faults every page in (untimed, run here); vCPU 1 then re-reads them `passes`
/// times, every read an SPTE hit.
fn spte_hits(pages: u64, passes: u64) -> (Vm, Rc<Vcpu>) {
    let mut vm = vm(pages, 2);
    let v0 = spawn_vcpu(&mut vm, 0, reads(pages, 1));
    run(&mut vm.h.w);
    check(&v0);
    let v1 = spawn_vcpu(&mut vm, 1, reads(pages, passes));
    (vm, v1)
}

/// Per-iteration sizes: a shorter and a longer run of each path (see the module comment on
/// why the longer ones cost more per operation). The harness's runs are shorter than either.
const FIXUP_ROUNDS: u64 = 1024;
const FAULT_PAGES: [u64; 2] = [512, 4096];
const HIT_PAGES: u64 = 256;
const HIT_PASSES: [u64; 2] = [16, 256];

fn fault(c: &mut Criterion) {
    // Sanity checks outside the timed loops: the paths do what the names say.
    {
        let (mut vm, v) = guest_faults(64);
        run(&mut vm.h.w);
        check(&v);
        assert_eq!(vm.kvm.sptes().len(), 64);
        assert_eq!(
            vm.kvm.installs().len(),
            64,
            "one SPTE install per page: no retries"
        );
        let (mut vm, v) = spte_hits(16, 4);
        let installs = vm.kvm.installs().len();
        run(&mut vm.h.w);
        check(&v);
        assert_eq!(vm.kvm.installs().len(), installs, "re-reads must not fault");
        let mut h = fixup_distinct(16);
        run(&mut h.w);
        assert_eq!(h.mm.ptes_in(BAR_HVA, BAR_HVA + 16 * PAGE_SIZE).len(), 16);
        assert_eq!(
            h.mm.pte(BAR_HVA + 3 * PAGE_SIZE).map(|p| p.pfn),
            Some(h.bar.pfn_of(3))
        );
        let mut h = fixup_zap(16);
        run(&mut h.w);
        assert_eq!(h.mm.pte(BAR_HVA), None);
        let (mut vm, v) = guest_faults_dynamic(64);
        run(&mut vm.h.w);
        check(&v);
        assert_eq!(vm.kvm.installs().len(), 64);
        let mut vm = slot_churn(4);
        run(&mut vm.h.w);
        assert_eq!(
            vm.kvm.active_slots().len(),
            1,
            "only the BAR's slot is left"
        );
    }

    let mut g = c.benchmark_group("fixup_user_fault");
    g.throughput(Throughput::Elements(FIXUP_ROUNDS));
    g.bench_function(format!("distinct_pages/{FIXUP_ROUNDS}"), |b| {
        b.iter_batched_ref(
            || fixup_distinct(FIXUP_ROUNDS),
            |h| black_box(run(&mut h.w)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function(format!("same_page_zap/{FIXUP_ROUNDS}"), |b| {
        b.iter_batched_ref(
            || fixup_zap(FIXUP_ROUNDS),
            |h| black_box(run(&mut h.w)),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("guest");
    for pages in FAULT_PAGES {
        g.throughput(Throughput::Elements(pages));
        g.bench_function(format!("pfnmap_fault_linux-6.13/{pages}"), |b| {
            b.iter_batched_ref(
                || guest_faults(pages),
                |(vm, _v)| black_box(run(&mut vm.h.w)),
                BatchSize::LargeInput,
            )
        });
    }
    g.throughput(Throughput::Elements(FAULT_PAGES[0]));
    g.bench_function(
        format!("pfnmap_fault_dynamic_slots/{}", FAULT_PAGES[0]),
        |b| {
            b.iter_batched_ref(
                || guest_faults_dynamic(FAULT_PAGES[0]),
                |(vm, _v)| black_box(run(&mut vm.h.w)),
                BatchSize::LargeInput,
            )
        },
    );
    for passes in HIT_PASSES {
        let hits = HIT_PAGES * passes;
        g.throughput(Throughput::Elements(hits));
        g.bench_function(format!("spte_hit/{hits}"), |b| {
            b.iter_batched_ref(
                || spte_hits(HIT_PAGES, passes),
                |(vm, _v)| black_box(run(&mut vm.h.w)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("memslot");
    g.throughput(Throughput::Elements(SLOT_PAIRS));
    g.bench_function(format!("create_delete/{SLOT_PAIRS}"), |b| {
        b.iter_batched_ref(
            || slot_churn(SLOT_PAIRS),
            |vm| black_box(run(&mut vm.h.w)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Create + delete pairs per `memslot/create_delete` iteration.
const SLOT_PAIRS: u64 = 256;

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = fault
}
criterion_main!(benches);
