//! `struct page` refcounting and the allocator: get_page / get_page_unless_zero / put_page,
//! compound and non-compound high-order pages (kernel-history.md B4).

mod common;

use common::*;
use model::mm::*;
use world::Status;

/// Run `body` as one actor (refcount operations are scheduling points).
fn act<F>(e: &mut Env, body: F)
where
    F: FnOnce(world::Cx, std::rc::Rc<Frames>) -> LocalBoxFuture<'static, ()> + 'static,
{
    let frames = e.frames.clone();
    e.w.spawn("t", move |cx| body(cx, frames));
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed, "{}", r.trace);
}

#[test]
fn put_page_at_one_frees_and_next_alloc_reuses_pfn_with_new_generation() {
    let mut e = env();
    let p = e.frames.alloc(0, Owner::Anon, false).unwrap();
    let gen = e.frames.generation(p);
    act(&mut e, move |cx, f| {
        Box::pin(async move { f.put_page(&cx, p).await })
    });
    assert!(e.frames.is_free(p));
    assert_eq!(e.frames.refcount(p), 0);
    let q = e.frames.alloc(0, Owner::Driver("x".into()), false).unwrap();
    assert_eq!(q, p);
    assert_eq!(e.frames.generation(q), gen + 1);
    assert_eq!(e.frames.owner(q), Some(Owner::Driver("x".into())));
    assert!(e.frames.anomalies().is_empty());
}

#[test]
fn put_page_above_one_does_not_free() {
    let mut e = env();
    let p = e.frames.alloc(0, Owner::Anon, false).unwrap();
    act(&mut e, move |cx, f| {
        Box::pin(async move {
            f.get_page(&cx, p).await;
            f.put_page(&cx, p).await;
        })
    });
    assert!(!e.frames.is_free(p));
    assert_eq!(e.frames.refcount(p), 1);
}

#[test]
fn get_page_unless_zero_refuses_zero_and_takes_nonzero() {
    let mut e = env();
    let live = e.frames.alloc(0, Owner::Anon, false).unwrap();
    let free = Pfn(live.0 + 1);
    assert!(e.frames.is_free(free));
    let out = {
        let frames = e.frames.clone();
        spawn_ret(&mut e.w, "t", move |cx| async move {
            (
                frames.get_page_unless_zero(&cx, free).await,
                frames.get_page_unless_zero(&cx, live).await,
            )
        })
    };
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((false, true)));
    assert_eq!(e.frames.refcount(free), 0);
    assert_eq!(e.frames.refcount(live), 2);
    assert!(e.frames.anomalies().is_empty());
}

#[test]
fn get_page_on_refcount_zero_is_recorded_as_anomaly() {
    let mut e = env();
    let free = Pfn(5);
    assert!(e.frames.is_free(free));
    act(&mut e, move |cx, f| {
        Box::pin(async move { f.get_page(&cx, free).await })
    });
    let a = e.frames.anomalies();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0].pfn, a[0].actor.as_str()), (free, "t"));
    assert!(
        a[0].what.contains("get_page on refcount 0"),
        "{}",
        a[0].what
    );
}

#[test]
fn put_page_below_zero_is_recorded_as_anomaly() {
    let mut e = env();
    let head = e
        .frames
        .alloc(1, Owner::Driver("ttm".into()), false)
        .unwrap();
    let tail = Pfn(head.0 + 1);
    act(&mut e, move |cx, f| {
        Box::pin(async move { f.put_page(&cx, tail).await })
    });
    let a = e.frames.anomalies();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].pfn, tail);
    assert!(a[0].what.contains("below zero"), "{}", a[0].what);
}

#[test]
fn compound_tail_refcounting_goes_to_the_head() {
    let mut e = env();
    let head = e
        .frames
        .alloc(1, Owner::Driver("thp".into()), true)
        .unwrap();
    let tail = Pfn(head.0 + 1);
    assert_eq!(
        e.frames.frame(tail).unwrap().shape,
        Shape::CompoundTail { head }
    );
    act(&mut e, move |cx, f| {
        Box::pin(async move { f.get_page(&cx, tail).await })
    });
    assert_eq!(e.frames.frame(head).unwrap().refcount, 2);
    assert_eq!(e.frames.frame(tail).unwrap().refcount, 0);
    assert_eq!(e.frames.refcount(tail), 2);
    act(&mut e, move |cx, f| {
        Box::pin(async move {
            f.put_page(&cx, tail).await;
            f.put_page(&cx, head).await;
        })
    });
    assert!(
        e.frames.is_free(head) && e.frames.is_free(tail),
        "the whole folio is freed"
    );
    assert!(e.frames.anomalies().is_empty());
}

#[test]
fn non_compound_high_order_tail_has_refcount_zero() {
    let e = env();
    let head = e
        .frames
        .alloc(1, Owner::Driver("ttm".into()), false)
        .unwrap();
    let tail = Pfn(head.0 + 1);
    let f = e.frames.frame(tail).unwrap();
    assert_eq!(f.shape, Shape::HighOrderTail { head });
    assert_eq!(f.refcount, 0);
    assert_eq!(e.frames.refcount(tail), 0);
    assert_eq!(e.frames.refcount(head), 1);
    assert_eq!(e.frames.owner(tail), Some(Owner::Driver("ttm".into())));
}

/// The CVE-2021-22543 mechanism (B4): get 0→1 then put 1→0 on a non-compound tail frees
/// it while its owner still uses it.
#[test]
fn get_then_put_on_high_order_tail_frees_it_under_its_owner() {
    let mut e = env();
    let head = e
        .frames
        .alloc(1, Owner::Driver("usbfs".into()), false)
        .unwrap();
    let tail = Pfn(head.0 + 1);
    act(&mut e, move |cx, f| {
        Box::pin(async move {
            f.get_page(&cx, tail).await;
            f.put_page(&cx, tail).await;
        })
    });
    assert!(e.frames.is_free(tail));
    assert!(!e.frames.is_free(head));
    assert_eq!(
        e.frames.anomalies().len(),
        1,
        "the 0 -> 1 get is the anomaly"
    );
    assert_eq!(
        e.frames.alloc(0, Owner::Anon, false),
        Some(tail),
        "reallocated to someone else"
    );
}
