use pbft_sim::*;

#[test]
fn baseline_smoke() {
    let r = run(SimConfig::default());
    println!("{}", r.summary());
    println!("{:?}", r.stats);
    assert!(r.safe());
    assert!(r.all_committed);
}
