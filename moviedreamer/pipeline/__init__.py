"""The movie pipeline: plan keyframes (AR) → render keyframes → animate clips → write (issue #9)."""
