import math

import pytest

from mst_clipiqa.reward import MSTCLIPIQAReward


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf])
def test_nonfinite_output_weights_refused_naming_them(tiny_models, weight):
    with pytest.raises(ValueError, match=r"output weights \{'quality': (nan|inf|-inf)\} are not finite"):
        MSTCLIPIQAReward(tiny_models("A"), outputs={"quality": weight})
