# render.rb JOB_SPEC TEMPLATE FRAGMENT: renders one BOSH job template as the director would,
# to stdout. render.rb --all JOB_SPEC FRAGMENT: renders every template of the job (those
# beside JOB_SPEC in templates/), as the director does for an instance, to stdout as one
# JSON object {path in the job: text}. FRAGMENT is YAML with the deployment's `properties` and the `instance`
# (`index`, `networks`: name => {ip: ...}). The template sees what BOSH gives it: p() over
# dotted names, falling back to the job spec's defaults; if_p() (with .else); spec.index
# and spec.networks. Only properties that the job spec declares can be read, as in BOSH.
require 'erb'
require 'json'
require 'ostruct'
require 'yaml'

class UnknownProperty < StandardError; end

class ElseBlock
  def initialize(active)
    @active = active
  end

  def else
    yield if @active
  end
end

class RenderContext
  attr_reader :spec

  def initialize(job_spec, fragment)
    declared = job_spec.fetch('properties') || {}
    @declared = declared.keys
    @defaults = declared.each_with_object({}) do |(name, definition), defaults|
      defaults[name] = definition['default'] if definition.is_a?(Hash) && definition.key?('default')
    end
    @properties = fragment['properties'] || {}
    instance = fragment['instance'] || {}
    networks = (instance['networks'] || {}).transform_values { |network| OpenStruct.new(network) }
    @spec = OpenStruct.new(
      'index' => instance.fetch('index', 0),
      'name' => job_spec['name'],
      'job' => OpenStruct.new('name' => job_spec['name']),
      'networks' => OpenStruct.new(networks)
    )
  end

  def p(*args)
    names = Array(args[0])
    names.each do |name|
      raise UnknownProperty, "property '#{name}' is not in the job spec" unless @declared.include?(name)
      value = lookup(name)
      return value unless value.nil?
    end
    return args[1] if args.length == 2
    raise UnknownProperty, "Can't find property '#{names.join("', '")}'"
  end

  def if_p(*names)
    values = names.map { |name| p(name, nil) }
    return ElseBlock.new(true) if values.any?(&:nil?)
    yield(*values)
    ElseBlock.new(false)
  end

  def render(text)
    ERB.new(text, trim_mode: '-').result(binding)
  end

  private

  def lookup(name)
    value = name.split('.').reduce(@properties) { |node, key| node.is_a?(Hash) ? node[key] : nil }
    value.nil? ? @defaults[name] : value
  end
end

all = ARGV.first == '--all'
args = all ? ARGV.drop(1) : ARGV
if args.length != (all ? 2 : 3)
  warn 'usage: ruby render.rb JOB_SPEC TEMPLATE FRAGMENT | ruby render.rb --all JOB_SPEC FRAGMENT'
  exit 2
end
job_spec = YAML.safe_load(File.read(args[0]))
fragment = YAML.safe_load(File.read(args.last))
template = nil
begin
  if all
    # A fresh context per template, as the director gives each template its own binding.
    templates = File.join(File.dirname(args[0]), 'templates')
    rendered = job_spec.fetch('templates').to_h do |source, destination|
      template = source
      [destination, RenderContext.new(job_spec, fragment).render(File.read(File.join(templates, source)))]
    end
    print rendered.to_json
  else
    print RenderContext.new(job_spec, fragment).render(File.read(args[1]))
  end
rescue UnknownProperty, RuntimeError => e
  warn "render.rb: #{template ? "#{template}: " : ''}#{e.message}"
  exit 1
end
