//! Test backend: `create-volume` for the trigger name spins forever.
fn spin() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
hostile_backend::hostile_backend!(spin);
