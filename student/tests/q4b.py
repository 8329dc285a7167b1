from otter.test_files import test_case

OK_FORMAT = False

name = "q4b"
points = 7

@test_case(points=0, hidden=False)
def test_predictions_complete(test_predictions, data):
    import math
    want = set(data.ids('test'))
    assert isinstance(test_predictions, dict) and set(test_predictions) == want, f'test_predictions must map each of the {len(want)} test ids to a prediction'
    assert all((math.isfinite(float(v)) for v in test_predictions.values())), 'predictions must be finite numbers'

