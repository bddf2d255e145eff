//! Whether a test that needs the real /dev/kvm runs here: with `HUSK_REQUIRE_KVM=1` (set by
//! CI) a missing device fails the test; without it the test is skipped with a loud message
//! naming `what` did not run.

use std::path::Path;

pub fn kvm_available(what: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var_os("HUSK_REQUIRE_KVM").is_none(),
        "HUSK_REQUIRE_KVM is set but /dev/kvm does not exist"
    );
    eprintln!("SKIPPED: /dev/kvm does not exist on this host; {what} did not run");
    false
}
