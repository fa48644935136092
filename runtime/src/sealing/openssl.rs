//! OpenSSL (which SQLCipher encrypts with) frees its state in an `atexit`
//! handler. A process whose main thread returns while another thread still
//! commits to a sealed database (the audit writer, a runtime dropped on a
//! worker thread) then crashes in that thread: SIGSEGV instead of its exit
//! status, seen as `sovra control` exiting by signal. Telling OpenSSL not to
//! register that handler, before anything initializes it, keeps its state
//! until the process is gone; the kernel reclaims it anyway.

use std::ffi::{c_int, c_void};
use std::sync::Once;

/// `OPENSSL_INIT_NO_ATEXIT` from OpenSSL 3's `crypto.h`.
const OPENSSL_INIT_NO_ATEXIT: u64 = 0x0008_0000;

unsafe extern "C" {
    /// OpenSSL 3: `int OPENSSL_init_crypto(uint64_t opts, const OPENSSL_INIT_SETTINGS *settings)`.
    fn OPENSSL_init_crypto(opts: u64, settings: *const c_void) -> c_int;
}

/// Initializes OpenSSL without its exit-time cleanup; must run before the
/// first use of SQLCipher in the process (the first caller's options win).
pub(crate) fn keep_openssl_until_exit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a documented OpenSSL entry point taking flags and a null
        // settings pointer (meaning defaults); it only initializes OpenSSL's
        // global state, and `Once` calls it a single time.
        let ok = unsafe { OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, std::ptr::null()) };
        if ok != 1 {
            tracing::warn!("OpenSSL refused to initialize without its exit-time cleanup");
        }
    });
}
