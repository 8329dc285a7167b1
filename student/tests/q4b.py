from otter.test_files import test_case

OK_FORMAT = False

name = "q4b"
points = 7

@test_case(points=0, hidden=False)
def test_the_model_predicts_every_validation_crystal(model, val_batches, normalizer, data, cgcnn_utils):
    import math
    assert model is not None, 'no trained model yet: run the training cell above first'
    pred = cgcnn_utils.predict(model, val_batches, normalizer)
    assert set(pred) == set(data.ids('val')), 'the model must predict every validation crystal'
    assert all((math.isfinite(v) for v in pred.values())), "the model's predictions must be finite numbers"

