//! The warmup-cosine learning rate against the formula worked by hand: linear warmup to the
//! peak, then peak·(r + (1 − r)·½(1 + cos(π·p))) down to r·peak, held after the last step.

use burn::lr_scheduler::LrScheduler;
use clex_train::lr_schedule::WarmupCosine;

#[test]
fn warmup_cosine_matches_the_hand_formula() {
    // peak 1e-3, floor 10 % of it, 10 warmup steps, 110 in all: the cosine spans steps 10..110.
    let s = WarmupCosine { peak: 1e-3, min_ratio: 0.1, warmup: 10, total: 110, step: 0 };
    // Worked by hand: warmup step s has (s+1)/10 of the peak; after it, p = (s − 10)/100 and
    // the rate is 1e-4 + 9e-4·½(1 + cos πp); cos(π/4) = 0.70710678118654752.
    let hand = [
        (0, 1e-4),                  // first warmup step
        (4, 5e-4),                  // mid-warmup
        (9, 1e-3),                  // warmup end: the peak
        (10, 1e-3),                 // p = 0
        (35, 8.681980515339464e-4), // p = 1/4: 1e-4 + 4.5e-4·(1 + 0.70710678118654752)
        (60, 5.5e-4),               // p = 1/2 (midpoint): 1e-4 + 4.5e-4
        (85, 2.318019484660536e-4), // p = 3/4: 1e-4 + 4.5e-4·(1 − 0.70710678118654752)
        (110, 1e-4),                // p = 1 (end): the floor
        (500, 1e-4),                // held after the end
    ];
    for (step, want) in hand {
        let got = s.rate(step);
        // f64 arithmetic against 16-digit hand values: measured 2.3e-16 relative; ~10x margin.
        assert!(((got - want) / want).abs() < 3e-15, "step {step}: {got:e} vs {want:e}");
    }
    // As burn-train drives it: one `step()` per micro-batch returns that micro-batch's rate,
    // and the checkpointed state (the step count) continues the sequence.
    let mut live = s;
    let rates: Vec<f64> = (0..120).map(|_| live.step()).collect();
    assert!(rates.iter().enumerate().all(|(i, r)| *r == s.rate(i)));
    let record = LrScheduler::to_record::<burn::backend::Flex>(&live);
    assert_eq!(record, 120);
    let mut resumed = LrScheduler::load_record::<burn::backend::Flex>(s, 60);
    assert_eq!(resumed.step(), s.rate(60));
}
