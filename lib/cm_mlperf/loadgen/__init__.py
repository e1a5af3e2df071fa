"""LoadGen knowledge shared by both harnesses and the submission code: the rounds' mlperf.conf and seeds
(rounds), the user.conf a run writes (user_conf) and the reading of LoadGen's logs (logs)."""
