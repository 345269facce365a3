"""One formula for how many clients a round samples: the strategy draws it, the CLI table shows it."""

from bigmodel.federation.config import clients_per_round


def test_clients_per_round_is_ceil_of_c_times_k_and_at_least_one():
    assert clients_per_round(10, 1.0) == 10
    assert clients_per_round(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in floats
    assert clients_per_round(20, 0.5) == 10  # the table once said "(0.5 sampled per round)"
    assert clients_per_round(10, 0.01) == 1
