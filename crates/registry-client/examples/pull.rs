//! Pull one platform of an image.
fn main() {}
