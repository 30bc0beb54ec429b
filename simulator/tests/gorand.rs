//! The port of Go's `math/rand` against values printed by Go 1.26 itself (`rand.New(rand.NewSource(seed))`, then
//! `Int()`, `Intn(8152)`, `Intn(1024)`, `Shuffle` of 0..20, `Perm(10)`, in that order).

use sovra_simulator::gorand::GoRand;

#[test]
fn matches_go_math_rand() {
    type Case = (i64, i64, usize, usize, [usize; 20], [usize; 10]);
    let cases: [Case; 4] = [
        (
            42,
            3440579354231278675,
            4315,
            644,
            [12, 11, 18, 7, 8, 15, 19, 10, 14, 1, 3, 2, 16, 9, 5, 17, 13, 6, 0, 4],
            [8, 5, 9, 2, 1, 3, 4, 7, 0, 6],
        ),
        (
            51,
            3893522058333705853,
            1647,
            960,
            [17, 7, 0, 16, 18, 8, 2, 4, 19, 6, 10, 12, 5, 3, 15, 1, 9, 11, 14, 13],
            [5, 1, 8, 2, 7, 0, 6, 9, 4, 3],
        ),
        (
            0,
            8717895732742165505,
            1802,
            1017,
            [7, 18, 19, 4, 12, 0, 8, 11, 17, 14, 9, 15, 16, 2, 13, 10, 3, 5, 6, 1],
            [6, 0, 4, 8, 7, 1, 5, 3, 9, 2],
        ),
        (
            -7,
            747107023976529931,
            2032,
            82,
            [8, 17, 13, 3, 18, 0, 2, 6, 11, 19, 9, 12, 7, 4, 14, 16, 10, 15, 5, 1],
            [4, 2, 6, 8, 9, 5, 1, 7, 3, 0],
        ),
    ];
    for (seed, int, a, b, shuffled, perm) in cases {
        let mut r = GoRand::new(seed);
        assert_eq!(r.int(), int, "seed {seed}");
        assert_eq!(r.intn(8152), a, "seed {seed}");
        assert_eq!(r.intn(1024), b, "seed {seed}: a power of two takes the mask path");
        let mut x: Vec<usize> = (0..20).collect();
        r.shuffle(&mut x);
        assert_eq!(x, shuffled, "seed {seed}");
        assert_eq!(r.perm(10), perm, "seed {seed}");
    }
}
