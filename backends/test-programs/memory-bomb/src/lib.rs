//! Test backend: `create-volume` for the trigger name allocates (and touches) memory until the
//! host says no.
fn allocate_without_bound() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xAB; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
hostile_backend::hostile_backend!(allocate_without_bound);
