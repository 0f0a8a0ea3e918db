"""The pipeline: one module per DVC stage, each a function ``run_<stage>(params, paths)`` that writes its outputs
atomically, and the ``minkseg`` command beside them.

==================  ==========================================================================================
module              job
==================  ==========================================================================================
``check_params``    the first stage: params.yaml was validated on loading; write the marker every stage reads
``download``        raw data: generate a synthetic set, download Synthia4D, or check the user's own folder
``preprocess``      raw scenes -> one compact file per scene + manifest (format: minkseg.data.scenefile)
``voxelize``        evaluation split -> voxelised samples with inverse maps (format: minkseg.data.evalfile)
``train``           the training run: checkpoints, best weights (models/model.pt), curves, MLflow run
``evaluate``        per-point metrics with test-time voting, plots, exports
``submit``          the ScanNet benchmark zip of the test split (format: ``submission``)
``paths``           where each stage reads and writes (the names of dvc.yaml)
``spec``            the run's dataset object and voxelisation params, from params.yaml
``lineage``         what made each output; the chain every stage checks before it works
``model``           the network of a run: build, describe, save, load, check against the dataset
``voting``          evaluation scenes as the evaluator reads them (one view per voting angle)
``mlflow_glue``     tracking-store checks and run status shared by train and evaluate
``cli``             argv -> params -> one stage function; user errors as one line, exit 2
``predict``         the ``minkseg predict`` command (a model file on new scans)
==================  ==========================================================================================

Why this file imports nothing: each stage's DVC deps are exactly the modules it imports (``tests/stage_deps.py``),
and importing ``minkseg.pipeline.download`` runs this file first. Import flows one way: stages/ -> pipeline ->
engine, datasets, data, nn -> sparse; nothing below imports this package.
"""
