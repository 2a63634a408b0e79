//! Micro-benchmarks of the hot paths (criterion): scanning a tree, BLAKE3,
//! block signatures, windowed diffs, and frame encode/decode of a manifest.
//! The whole-tool comparison with rsync is `scripts/bench`; these isolate the
//! pieces. Run: `cargo bench --bench hot_paths`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hasync::sync::delta;
use hasync::sync::scan::{Excludes, scan};
use hasync::wire::Msg;
use std::hint::black_box;
use std::io::Write;

fn pseudo(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn file_with(dir: &std::path::Path, name: &str, data: &[u8]) -> std::fs::File {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(data).unwrap();
    std::fs::File::open(&p).unwrap()
}

fn bench_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for d in 0..100 {
        let sub = dir.path().join(format!("d{d:03}"));
        std::fs::create_dir(&sub).unwrap();
        for f in 0..20 {
            std::fs::write(sub.join(format!("f{f:02}.conf")), b"x = 1\n").unwrap();
        }
    }
    let ex = Excludes::new(&["*.swp".into(), "monitor/".into()]).unwrap();
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(2100));
    g.bench_function("2000_files_100_dirs", |b| {
        b.iter(|| black_box(scan(dir.path(), &ex).unwrap().unwrap().entries.len()))
    });
    g.finish();
}

fn bench_hash_and_delta(c: &mut Criterion) {
    const LEN: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let old = pseudo(LEN, 1);
    let mut new = old.clone();
    for i in 0..16 {
        let at = i * (LEN / 16) + 4096;
        new[at..at + 65536].copy_from_slice(&pseudo(65536, 100 + i as u64));
    }
    let old_f = file_with(dir.path(), "old", &old);
    let new_f = file_with(dir.path(), "new", &new);

    let mut g = c.benchmark_group("delta_16MiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(20);
    g.bench_function("blake3", |b| b.iter(|| black_box(blake3::hash(&new))));
    g.bench_function("signature", |b| {
        b.iter(|| black_box(delta::file_signature(&old_f, LEN as u64).unwrap().len()))
    });
    let sig_bytes = delta::file_signature(&old_f, LEN as u64).unwrap();
    let sig = delta::parse_signature(sig_bytes).unwrap();
    let index = sig.index();
    g.bench_function("diff_16_changes", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            let mut ops = 0usize;
            delta::diff_file(
                &index,
                &new_f,
                LEN as u64,
                &mut buf,
                |_| {
                    ops += 1;
                    Ok(())
                },
                |_| {},
            )
            .unwrap();
            black_box(ops)
        })
    });
    g.finish();
}

fn bench_frames(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for f in 0..1000 {
        std::fs::write(dir.path().join(format!("file-{f:04}.conf")), b"x").unwrap();
    }
    let entries = scan(dir.path(), &Excludes::new(&[]).unwrap())
        .unwrap()
        .unwrap()
        .entries;
    let msg = Msg::Manifest(entries.iter().collect());
    let bytes = msg.encode();
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(1001));
    g.bench_function("encode_manifest_1000", |b| {
        b.iter(|| black_box(msg.encode().len()))
    });
    g.bench_function("decode_manifest_1000", |b| {
        b.iter(|| black_box(Msg::decode(&bytes).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench_scan, bench_hash_and_delta, bench_frames);
criterion_main!(benches);
