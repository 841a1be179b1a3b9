//! `tch::manual_seed` makes dropout reproducible. libtorch's generator is global to the process,
//! so this check lives alone in its own test binary: no other test draws from it meanwhile.

use span_marker::model::dropout::dropout;
use tch::{Device, Kind, Tensor};

#[test]
fn dropout_masks_follow_the_torch_seed() {
    let x = Tensor::ones([8, 100], (Kind::Float, Device::Cpu));
    let dropout = |x: &Tensor, p: f64, train: bool| dropout(x, p, train).unwrap();
    tch::manual_seed(3);
    let first = dropout(&x, 0.2, true);
    let next = dropout(&x, 0.2, true);
    tch::manual_seed(3);
    assert!(first.equal(&dropout(&x, 0.2, true)));
    assert!(next.equal(&dropout(&x, 0.2, true)));
    assert!(!first.equal(&next));
    tch::manual_seed(4);
    assert!(!first.equal(&dropout(&x, 0.2, true)));
}
