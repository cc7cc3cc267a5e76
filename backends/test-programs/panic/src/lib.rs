//! Test backend: `create-volume` for the trigger name panics.
fn panic_now() {
    panic!("hostile backend panicked on purpose");
}
hostile_backend::hostile_backend!(panic_now);
