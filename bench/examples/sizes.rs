fn main() {
    let rt = evoq_bench::workload::runtime().unwrap();
    rt.block_on(async {
        let app = evoq::Evoq::builder().start().await.unwrap();
        let fut = app.dispatch(evoq_bench::bank::Deposit { account: "a".into(), amount: 1 });
        println!("dispatch future: {}", std::mem::size_of_val(&*fut));
    });
}
