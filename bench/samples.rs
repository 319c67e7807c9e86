//! The CSV the plugin benchmarks convert (shared by `benches/plugin_convert.rs` and
//! `bench/plugin_ratio.rs`, so both measure the same data).

/// `header`, then the rows `row` makes for 0, 1, 2, … until there are at least `bytes`.
fn sample(header: &str, bytes: usize, row: impl Fn(u64) -> String) -> Vec<u8> {
    let mut data = header.as_bytes().to_vec();
    for number in 0.. {
        if data.len() >= bytes {
            break;
        }
        data.extend_from_slice(row(number).as_bytes());
    }
    data
}

/// Records of short fields: an id, a name, an amount and a short quoted comment.
pub fn short_fields(bytes: usize) -> Vec<u8> {
    sample("id,name,amount,comment\n", bytes, |row| {
        format!(
            "{row},name-{row},{}.{:02},\"a comment, with a comma\"\n",
            row * 7 % 1000,
            row % 100
        )
    })
}

/// Records of longer fields: a UUID (36 bytes) and a quoted description of about seventy bytes
/// with commas in it, beside two short ones.
pub fn long_fields(bytes: usize) -> Vec<u8> {
    sample("id,uuid,description,amount\n", bytes, |row| {
        let hash = row.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        format!(
            "{row},{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x},\"Order {row} for customer {}, shipped \
             from warehouse {}, paid in full\",{}.{:02}\n",
            hash >> 32,
            (hash >> 16) & 0xffff,
            hash & 0xfff,
            (hash >> 12) & 0xfff,
            hash & 0xffff_ffff_ffff,
            hash % 10_000,
            row % 17,
            row * 7 % 1000,
            row % 100
        )
    })
}
