using System.CommandLine;
using System.Text.Json.Nodes;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.SaeBench;

namespace IlgpuSae.Cli.Commands;

/// <summary>The <c>--saebench-*</c> options of <c>eval</c>: where and under which name SAEBench's core result
/// file goes.</summary>
internal sealed class SaeBenchOptions
{
    public Option<string?> Directory { get; } =
        new("--saebench-json")
        {
            Description =
                "Also write SAEBench's core evaluation file {release}_{id}_eval_results.json into this folder (every metric group and field; explained_variance is the correct formula, the buggy SAEBench/SAELens value is kept as eval_result_unstructured.explained_variance_bug_compatible). With --model every field is computed (cross-entropy and KL then skip predictions made at BOS/EOS/PAD positions, as SAEBench); with --acts only, the KL and cross-entropy groups and consistent_activation_heuristic are written as -1 (SAEBench's 'not computed') with a warning.",
            HelpName = "DIR",
        };

    public Option<string?> Release { get; } =
        new("--saebench-release")
        {
            Description =
                "sae_lens_release_id and the file name's first part (default: the name of the folder that holds the SAE folder).",
        };

    public Option<string?> Id { get; } =
        new("--saebench-id")
        {
            Description = "sae_lens_id and the file name's second part (default: the SAE folder's name).",
        };

    public Option<bool> Overwrite { get; } =
        new("--saebench-overwrite")
        {
            Description = "Replace an existing SAEBench result file (default: refuse, before evaluating).",
        };

    public IEnumerable<Option> All => [Directory, Release, Id, Overwrite];

    /// <summary>Where the file goes, checked before any work; null without <c>--saebench-json</c>.</summary>
    public Target? Prepare(ParseResult parse, string saePath, ActivationOptions acts, ModelOptions lm)
    {
        var dir = parse.GetValue(Directory);
        if (dir is null)
        {
            if (
                parse.GetValue(Release) is not null
                || parse.GetValue(Id) is not null
                || parse.GetValue(Overwrite)
            )
            {
                throw new ArgumentException(
                    "--saebench-release, --saebench-id and --saebench-overwrite need --saebench-json DIR."
                );
            }

            return null;
        }

        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(saePath));
        bool isFile = File.Exists(full);
        bool npz = isFile && full.EndsWith(".npz", StringComparison.OrdinalIgnoreCase);
        var folder = isFile && !npz ? Path.GetDirectoryName(full)! : full;
        var id =
            parse.GetValue(Id) ?? (npz ? Path.GetFileNameWithoutExtension(full) : Path.GetFileName(folder));
        var parent = Path.GetFileName(Path.GetDirectoryName(folder) ?? "");
        var release = parse.GetValue(Release) ?? (string.IsNullOrEmpty(parent) ? "local" : parent);
        var fileName = SaeBenchCore.FileName(release, string.IsNullOrEmpty(id) ? "sae" : id);
        bool overwrite = parse.GetValue(Overwrite);
        SaeBenchCore.CheckOutput(
            dir,
            fileName,
            overwrite,
            [
                folder,
                parse.GetValue(acts.Acts) ?? "",
                parse.GetValue(lm.Model) ?? "",
                parse.GetValue(lm.Corpus) ?? "",
            ]
        );
        return new Target(dir, fileName, release, string.IsNullOrEmpty(id) ? "sae" : id, overwrite);
    }

    /// <summary>Computes the weight metrics, builds the file and writes it; returns its path.</summary>
    public static string Write(
        Target target,
        SparseAutoencoder sae,
        SaeBenchTokenMetrics tokens,
        SaeBenchEvalSettings settings,
        DownstreamMetrics? downstream,
        TextWriter log
    )
    {
        var weights = SaeBenchWeights.Compute(sae);
        var notes = new List<string>();
        SaeBenchModelMetrics? model = null;
        if (downstream is null)
        {
            log.WriteLine(
                "warning: no --model: the SAEBench KL and cross-entropy groups are written as -1 (SAEBench's value for 'not computed', compute_kl/compute_ce_loss false), and consistent_activation_heuristic is -1 (stored activations have no prompts). Give --model and --corpus to compute every field."
            );
            notes.Add(
                "Evaluated on stored activations without a language model: model_behavior_preservation and model_performance_preservation are -1, consistent_activation_heuristic is -1 (rows carry no prompt structure), context_size is 1 and batch_size_prompts counts activation rows per batch."
            );
        }
        else
        {
            model = new SaeBenchModelMetrics(
                downstream.KlDivScore,
                downstream.KlDivWithAblation,
                downstream.KlDivWithSae,
                downstream.CeLossScore,
                downstream.CeLossWithAblation,
                downstream.CeLossWithSae,
                downstream.CeLossWithoutSae
            );
            notes.Add($"Cross-entropy and KL: {downstream.TokensCounted}.");
            notes.Add(
                "KL is averaged over the positions that have a next token (SAEBench also counts each context's last position); the token-level metrics skip BOS/EOS/PAD positions, as SAEBench's."
            );
            notes.Add(
                "Every metric comes from the same contexts in one pass (SAEBench draws separate batches for the reconstruction and the sparsity/variance metrics); token_stats count the positions of those contexts before BOS/EOS/PAD are dropped."
            );
        }

        var result = SaeBenchCore.Build(
            sae.Config,
            tokens,
            weights,
            model,
            settings,
            target.Release,
            target.SaeId,
            notes
        );
        var minusOne = result["eval_result_unstructured"]!["written_as_minus_one"]!.AsArray();
        foreach (
            var entry in minusOne.Select(e => e!.GetValue<string>()).Where(e => !e.Contains("(no model)"))
        )
        {
            log.WriteLine($"warning: SAEBench value {entry} is NaN or infinite; written as -1.");
        }

        return SaeBenchCore.Write(target.Directory, target.FileName, result, target.Overwrite);
    }

    /// <summary>A checked output location.</summary>
    /// <param name="Directory">The folder.</param>
    /// <param name="FileName">SAEBench's file name.</param>
    /// <param name="Release"><c>sae_lens_release_id</c>.</param>
    /// <param name="SaeId"><c>sae_lens_id</c>.</param>
    /// <param name="Overwrite">Whether an existing file may be replaced.</param>
    internal sealed record Target(
        string Directory,
        string FileName,
        string Release,
        string SaeId,
        bool Overwrite
    );
}
