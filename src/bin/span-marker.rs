fn main() {
    let t = tch::Tensor::from_slice(&[1i64, 2, 3]);
    println!("{}", t.sum(tch::Kind::Int64));
}
