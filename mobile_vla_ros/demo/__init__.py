"""`mobile-vla demo`: the whole record -> train -> drive loop in the simulated room, no robot needed.

Stages (the first three are cached in --workdir and skipped when already done with the same
settings; --fresh redoes them):

  1. base model   a tiny Kosmos-2 (real architecture, small widths)         WORKDIR/tiny-kosmos2
  2. episodes     scripted-expert demonstrations, both instructions, H5    WORKDIR/demo-episodes
  3. policy       `mobile-vla train` on them (same entry point)              WORKDIR/demo-policy
  4. drive        closed loop through sim_node, camera_window_node and inference_node over
                  DDS, alternating left/right on layouts never used for training
  5. switch       the same layouts, the other instruction first, this one on the topic 1 s in
  6. frozen camera the same trials with a camera that keeps showing each episode's first view
  7. watching     the same trials with the familiarity monitor only warning: were its alarms false?
  8-9. shifted    the layouts in scenes the demonstrations never show, monitor none, then stop
  10. report      success table per instruction beside the switch trials, the frozen-camera run
                  and the image-blind baseline (the expert's mean path per instruction replayed
                  without looking, on the same layouts), the familiarity monitor's counts,
                  OUT/trajectories.png, OUT/summary.json

Modules: pipeline.py runs the stages, stages.py caches them, trials.py plans and scores trials
(with the image-blind baseline), closed_loop.py drives them through the real nodes over DDS
(conductor.py plays the operator);
corrections.py runs `mobile-vla demo --corrections` (one round of takeovers and fine-tuning,
before/after) on the same stages.
"""
