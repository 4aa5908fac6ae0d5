//! Issue 10, the VMM's side of an exit on real KVM: re-running an access after EFAULT as often
//! as the plan says, host steps after a given exit, and the data an MMIO read is completed with.
mod common;
use common::*;
use probe::{BackingKind as K, Exit, GuestOp, HostAction, Mode, Step};

#[test]
fn reruns_steps_after_the_nth_exit_and_mmio_data() {
    if skip("reruns_steps_after_the_nth_exit_and_mmio_data") {
        return;
    }
    let mut p = one(
        "vmm",
        backing("h", K::Hole, 1, true, None),
        false,
        vec![
            r(D),
            GuestOp::Read {
                gpa: 0x30000,
                size: 4,
            },
        ],
        vec![Step {
            after: Some((0, 0, 3)),
            action: HostAction::MmapFixedAnon {
                backing: "h".into(),
                offset_pages: 0,
                pages: 1,
                fill: Some(0x5555_5555),
            },
            race: false,
        }],
        Mode::Native,
    );
    p.vcpus[0].reruns = vec![3];
    p.vcpus[0].mmio = vec![0, 0x600d_600d];
    let res = isolated(&p).unwrap();
    let mmio = vec![
        Exit::MmioRead {
            gpa: 0x30000,
            len: 4,
        },
        Exit::Value(0x600d_600d),
    ];
    assert_eq!(
        exits(&res),
        vec![
            vec![
                Exit::Efault,
                Exit::Efault,
                Exit::Efault,
                Exit::Value(0x5555_5555)
            ],
            mmio
        ]
    );
    // Fewer re-runs than the step waits for: the access is given up after its last one,
    // and the step still runs once the access is over.
    p.vcpus[0].reruns = vec![1];
    let res = isolated(&p).unwrap();
    assert_eq!(exits(&res)[0], vec![Exit::Efault, Exit::Efault]);
}
